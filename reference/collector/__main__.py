"""`python -m reference.collector`: run the reference collector."""

import sys

from reference.collector.cli import main

sys.exit(main())
