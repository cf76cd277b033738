"""`python -m loadtests --help`: the harness's options and exit statuses; other arguments go to `locust`."""

from __future__ import annotations

import os
import shutil
import sys

from locust.argument_parser import get_empty_argument_parser

from loadtests.options import EXIT_STATUSES, add_options
from reference import VERSION_TEXT

DESCRIPTION = """The namedpiper harness runs inside Locust:

    locust --config scenarios/NAME.conf [options]     a scenario, headless, ends with the verdict
    locust -f loadtests/fifo.py [options]             the web UI on http://127.0.0.1:8089

Locust answers --help before it loads the locustfile, so its help lists only Locust's options; these are the
harness's (each also NAMEDPIPER_<NAME> in the environment, or NAME = value in a config file). Only the
load-shaping ones can be changed from the web UI. `python -m loadtests ARGS` runs `locust ARGS`."""


def build_parser():
    """Locust's empty parser with the harness's options: what --help prints."""
    parser = get_empty_argument_parser(add_help=True)
    parser.prog = "python -m loadtests"
    parser.description = DESCRIPTION
    parser.epilog = (
        f"{EXIT_STATUSES}. A second SIGINT/SIGTERM skips the drain and still stops the collector and "
        "the database it started."
    )
    parser.add_argument("--version", action="version", version=VERSION_TEXT)
    add_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the help or the version, or hand the arguments to locust."""
    args = sys.argv[1:] if argv is None else argv
    if not args or {"-h", "--help", "--version"} & set(args):
        build_parser().parse_args(args or ["--help"])
        return 0
    locust = shutil.which("locust", path=os.path.dirname(sys.executable)) or "locust"
    os.execv(locust, [locust, *args])  # noqa: S606 - the harness is Locust; replace this process with it
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
