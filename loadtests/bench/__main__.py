"""`python -m loadtests.bench`: run the benchmark's command line."""

import sys

from loadtests.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
