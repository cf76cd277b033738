"""`python -m loadtests.fleet --host-id NAME`: one fleet host on this machine, a real Locust worker in namespaces.

The worker runs in a mount namespace with a private tmpfs on its fleet folder (no host sees another's FIFO) and in
a PID namespace of its own (killing the worker kills its collector too, as when a host dies). Needs root and
util-linux's unshare. It only starts `locust -f loadtests/fifo.py --worker ...`; everything else is Locust's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from loadtests.fleet_host import HOST_ID_PATTERN, fleet_dir

LOCUSTFILE = Path(__file__).resolve().parent / "fifo.py"
# The private tmpfs holds FIFOs, lock and ready files only: no data is stored in a FIFO.
TMPFS_OPTIONS = "mode=0700,size=16m"


def unshare_argv(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """This command again, inside new mount and PID namespaces (the PID namespace dies with the worker)."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        sys.executable,
        "-m",
        "loadtests.fleet",
        "--inside",
        "--host-id",
        args.host_id,
        "--master-host",
        args.master_host,
        "--master-port",
        str(args.master_port),
        "--fleet-dir",
        str(args.fleet_dir),
        "--",
        *rest,
    ]


def worker_argv(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """The Locust worker of this host."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--worker",
        "--master-host",
        args.master_host,
        "--master-port",
        str(args.master_port),
        "--host-id",
        args.host_id,
        "--fleet-dir",
        str(args.fleet_dir),
        *rest,
    ]


def main(argv: list[str] | None = None) -> int:
    """Start one fleet host: re-run inside namespaces, mount its private folder, become its Locust worker."""
    raw = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (raw[: raw.index("--")], raw[raw.index("--") + 1 :]) if "--" in raw else (raw, [])
    from reference import VERSION_TEXT

    parser = argparse.ArgumentParser(
        prog="python -m loadtests.fleet",
        description=__doc__.splitlines()[0],
        epilog="Options after -- go to the worker (locust -f loadtests/fifo.py --worker ...), e.g. -- "
        "--kill-collector-at 5 --report-dir reports. Usually the master starts this itself (--local-hosts).",
    )
    parser.add_argument("--version", action="version", version=VERSION_TEXT)
    parser.add_argument("--host-id", required=True, help="the host's name in the verdict")
    parser.add_argument("--master-host", default="127.0.0.1", help="the Locust master (127.0.0.1)")
    parser.add_argument("--master-port", type=int, default=5557, help="the master's port (5557)")
    parser.add_argument("--fleet-dir", type=Path, default=None, help="the hosts' run folder (TMPDIR/namedpiper-fleet)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(ours)
    if not HOST_ID_PATTERN.fullmatch(args.host_id):
        parser.error(f"--host-id {args.host_id!r}: give letters, digits, '.', '_' or '-'")
    args.fleet_dir = (args.fleet_dir or fleet_dir(None)).resolve()
    if not args.inside:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            print(  # noqa: T201 - main()'s one line of why
                "error: a local fleet host needs root and unshare (util-linux) for its own mount namespace; "
                "start workers yourself instead: locust -f loadtests/fifo.py --worker --host-id NAME",
                file=sys.stderr,
            )
            return 2
        args.fleet_dir.mkdir(parents=True, exist_ok=True)  # the mount point, in the shared file system
        os.execvp("unshare", unshare_argv(args, rest))  # noqa: S606 - a fixed argv, no shell
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "namedpiper-fleet", str(args.fleet_dir)], check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: cannot mount a private tmpfs on {args.fleet_dir}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    os.execv(sys.executable, worker_argv(args, rest))  # noqa: S606 - a fixed argv, no shell
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
