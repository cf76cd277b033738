"""The harness's Locust options, declared once; each has an environment variable and may sit in a config file."""

from __future__ import annotations

from reference.sizes import parse_size

# A started collector gets this long to become ready (the reference one opens its FIFO in ~0.5 s; syslog-ng stores
# its probe row in ~1 s).
READY_TIMEOUT_S = 30.0

# Exit statuses of a harness run (Locust's process exit code), documented in --help and docs/harness.md.
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_CANNOT_START = 2
EXIT_INTERRUPTED = 3
EXIT_STATUSES = (
    f"exit status: {EXIT_PASS} every expectation holds; {EXIT_FAIL} an expectation failed; "
    f"{EXIT_CANNOT_START} the run could not start; {EXIT_INTERRUPTED} interrupted (verdict written)"
)
# The web UI (and a --processes master) binds here unless Locust's --web-host (--master-bind-host) says otherwise:
# the form starts runs and the master port takes workers' counters, so neither faces the network by default
# (expose the UI with --web-login or behind an authenticating reverse proxy, see docs/security.md).
DEFAULT_WEB_HOST = "127.0.0.1"
# Rows of this many most recent runs stay in the database; older runs' rows are deleted after each verdict.
# 10 quick-start runs hold about 3 GB: enough history to compare, bounded disk.
DEFAULT_KEEP_RUNS = 10

# Seconds the harness waits after the users stop for what was sent to land before it stops the collector.
DRAIN_TIMEOUT_S = 30.0
# Placeholders: {python} this interpreter, {fifo}, {dsn}, {journal} a folder in the run's report folder.
# No {dsn} by default: the collector gets it in NAMEDPIPER_DSN, since a password on a command line is visible to
# every local user (/proc/PID/cmdline).
DEFAULT_COLLECTOR_CMD = "{python} -m reference.collector --fifo {fifo} --stats-interval 5"
WEB_HOST = "127.0.0.1"


# The only options the web UI shows and its HTTP API accepts: they shape the load and name no command, path,
# DSN or database. Every other option, including any added later, is settable only where the harness starts
# (command line, config file, environment), because the web form can be posted by anyone who reaches the port.
WEB_EDITABLE = frozenset(
    {
        "size_mix",
        "lines_per_write",
        "drop_when_full",
        "reopen_per_write",
        "seed",
        "account_bytes",
        "hostile_every",
        "hostile_kinds",
    }
)
# Locust's own /swarm form fields (run shape and the display-only host); the rest of a POST must be in WEB_EDITABLE.
# Every harness option's dest, filled as add_options declares them (verdict.json records these).
HARNESS_OPTIONS: set[str] = set()
LOCUST_FORM_FIELDS = frozenset(
    {"user_count", "spawn_rate", "host", "run_time", "user_classes", "shape_class", "profile"}
)


# --lines-per-write at most: 1,000 small lines are ~450 KB in one write, far past any pipe; a larger number only
# makes one write (built in one step, without yielding) big enough to stall the harness or exhaust its memory.
MAX_LINES_PER_WRITE = 1_000


def check_load_options(options) -> None:
    """ValueError naming the option when a load-shaping value (also settable from the web UI) is out of range."""
    count = getattr(options, "lines_per_write", 0)
    try:
        count = int(count or 0)
    except (TypeError, ValueError):
        raise ValueError(f"--lines-per-write {count!r}: give a whole number from 0 to {MAX_LINES_PER_WRITE}") from None
    if not 0 <= count <= MAX_LINES_PER_WRITE:
        raise ValueError(
            f"--lines-per-write {count}: give a whole number from 0 (pack lines up to PIPE_BUF) to "
            f"{MAX_LINES_PER_WRITE}"
        )


def refused_fields(form_keys: set[str]) -> list[str]:
    """The fields of a POST /swarm that the web UI may not set (every option outside WEB_EDITABLE)."""
    return sorted(form_keys - LOCUST_FORM_FIELDS - WEB_EDITABLE)


def add_options(parser) -> None:
    """Register every namedpiper option on Locust's parser (called from init_command_line_parser)."""
    # Locust binds its web UI and, with --processes, its master port (5557) on every interface by default.
    parser.set_defaults(web_host=DEFAULT_WEB_HOST, master_bind_host=DEFAULT_WEB_HOST)
    group = parser.add_argument_group("namedpiper", f"namedpiper harness options; {EXIT_STATUSES}")

    # Locust binds its web UI to every interface by default; the harness answers on this machine only
    # (--web-host or LOCUST_WEB_HOST to choose otherwise).
    parser.set_defaults(web_host=WEB_HOST)

    def option(name: str, **kwargs) -> None:
        env = "NAMEDPIPER_" + name.lstrip("-").upper().replace("-", "_")
        action = group.add_argument(name, env_var=env, **kwargs)
        # What Locust's own add_argument sets; a group's does not take these keywords. Off unless listed.
        action.include_in_web_ui = action.dest in WEB_EDITABLE
        action.is_secret = action.is_required = False
        HARNESS_OPTIONS.add(action.dest)

    # Where and what to write.
    option("--fifo", default="", help="FIFO to write; empty: a new one in a temporary folder")
    option("--size-mix", default="small", help="size classes and weights of users, e.g. small:8,medium:1,pipe_buf:1")
    option(
        "--lines-per-write",
        type=int,
        default=0,
        help="lines per write; 0 packs whole lines up to PIPE_BUF (4096 B); a larger line is one write",
    )
    option(
        "--drop-when-full",
        action="store_true",
        default=False,
        help="non-blocking writers: a write that finds the pipe full is dropped and counted (EAGAIN)",
    )
    option(
        "--reopen-per-write",
        action="store_true",
        default=False,
        help="open and close the FIFO around every write (writer churn)",
    )
    option("--seed", type=int, default=0, help="seed for reproducible events")
    option(
        "--account-bytes",
        action="store_true",
        default=False,
        help="record the size of every line above PIPE_BUF so torn bytes can be accounted for",
    )
    option(
        "--hostile-every",
        type=int,
        default=0,
        help="after every N writes, each user writes the next bad line of scenarios/corpus/; 0: off",
    )
    option("--hostile-kinds", default="", help="comma-separated corpus kinds --hostile-every sends; empty: all")
    # The system under test.
    option("--dsn", default="", help="PostgreSQL DSN; empty: embedded PostgreSQL (.namedpiper/)")
    option(
        "--db-listen",
        default="",
        help="the embedded database also listens on HOST:PORT (TCP, a generated password; for fleet hosts on "
        "other machines); empty: unix socket only",
    )
    option(
        "--db-listen-allow-remote",
        action="store_true",
        default=False,
        help="let --db-listen take a non-loopback address (the database then faces the network)",
    )
    option(
        "--collector-cmd",
        default=DEFAULT_COLLECTOR_CMD,
        help="command that reads {fifo} into {dsn} ({journal}: a folder for it; {python}: this python); "
        "'none' when a collector already reads the FIFO",
    )
    option(
        "--collector",
        default="reference",
        help="shipped collector adapter: reference or syslog-ng (docs/adapters.md); --collector-cmd for others",
    )
    option(
        "--ready",
        default="",
        help="when the collector counts as ready: fifo (it opened the FIFO), probe (a probe line reached logs), "
        "sql:CONDITION, cmd:COMMAND (exits 0), cmd (the adapter's command); empty: the adapter's choice",
    )
    option(
        "--ready-timeout",
        type=float,
        default=READY_TIMEOUT_S,
        help="seconds a started collector has to become ready; else the run cannot start (status 2)",
    )
    option(
        "--drain-quiet",
        type=float,
        default=None,
        help="the drain ends when nothing landed for this many seconds; default: the adapter's (reference 3, "
        "syslog-ng 15)",
    )
    option(
        "--fault-cmd",
        default="",
        help="with --collector-cmd none: command performing collector faults, {action} is pause, resume, kill, "
        "stop or start",
    )
    option("--pipe-size", type=int, default=0, help="pipe capacity the reference collector asks for; 0: default")
    option(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help="seconds to wait after the users stop for every sent line to land",
    )
    option("--report-dir", default="reports", help="folder for the verdict JSON and Locust's HTML report")
    option(
        "--timeline-interval",
        type=float,
        default=1.0,
        help="seconds between the timeline's samples of the pipeline (verdict.json, timeline.csv, report.html)",
    )
    option(
        "--keep-runs",
        type=int,
        default=DEFAULT_KEEP_RUNS,
        help="keep the rows of this many most recent runs in the database; older runs' rows are deleted after "
        "each verdict; 0: keep everything",
    )
    # Fleets (docs/fleet.md): many application hosts, each with its own FIFO and collector, one central database.
    option(
        "--fleet",
        action="store_true",
        default=False,
        help="master: every worker host runs its own FIFO and collector (its own options), the master only "
        "verifies centrally; workers learn it from the master",
    )
    option("--host-id", default="", help="fleet worker: this host's name in the verdict; empty: the hostname")
    option(
        "--fleet-dir",
        default="",
        help="fleet worker: the host's run folder for its FIFO and owner lock; empty: TMPDIR/namedpiper-fleet",
    )
    option(
        "--local-hosts",
        type=int,
        default=0,
        help="fleet master: start this many worker hosts on this machine, each in its own mount namespace "
        "(unshare, root) with a private run folder; 0: the workers are started elsewhere",
    )
    option(
        "--local-host-args",
        default="",
        help="fleet master with --local-hosts: extra worker options per host, e.g. 'host2: --kill-collector-at 4'; "
        "entries separated by ';' (hosts are named host1, host2, ...)",
    )
    # Faults, at seconds from the start of the run (see scenarios/).
    option("--pause-collector-at", type=float, default=-1, help="SIGSTOP the collector at this second")
    option("--pause-collector-for", type=float, default=0, help="seconds the collector stays stopped")
    option("--kill-collector-at", default="", help="SIGKILL and restart the collector at these seconds, e.g. 15,30")
    option(
        "--restart-collector-at",
        type=float,
        default=-1,
        help="stop the collector (SIGTERM) at this second and start it again after --restart-gap",
    )
    option("--restart-gap", type=float, default=3, help="seconds with no reader during --restart-collector-at")
    option("--db-outage-at", type=float, default=-1, help="stop the embedded database at this second")
    option("--db-outage-for", type=float, default=0, help="seconds the database stays down")
    option(
        "--statement-timeout-at",
        type=float,
        default=-1,
        help="at this second set statement_timeout = 1ms on the collector's role (np_collector, created for "
        "it) and end its sessions; reset after --statement-timeout-for",
    )
    option("--statement-timeout-for", type=float, default=0, help="seconds the collector's role keeps the timeout")
    # Expectations: the run fails (non-zero exit code) when one does not hold. -1 means no limit.
    option("--max-lost", type=int, default=0, help="lines sent but neither landed nor accounted for")
    option("--max-duplicated", type=int, default=0, help="lines that landed more than once")
    option(
        "--max-torn",
        type=int,
        default=-1,
        help="rejected (torn or bad) lines at most, not counting the bad lines --hostile-every sent",
    )
    option("--min-torn", type=int, default=0, help="rejected lines at least (scenarios that demonstrate tearing)")
    option("--min-rows-per-s", type=float, default=0, help="rows per second end to end, at least")
    option(
        "--max-collector-rss-mib", type=float, default=-1, help="the collector's peak resident memory (VmHWM), at most"
    )
    option(
        "--max-unaccounted-bytes",
        type=int,
        default=-1,
        help="with --account-bytes: sent bytes neither landed nor rejected, at most",
    )
    # None: 0 with --hostile-every (every rejection is a bad line sent, every bad line is rejected), else no limit.
    option(
        "--max-unexplained-rejections",
        type=int,
        default=None,
        help="rejected lines beyond the bad lines sent; default 0 with --hostile-every, else no limit",
    )
    option(
        "--max-bad-accepted",
        type=int,
        default=None,
        help="bad lines sent that no rejection accounts for; default 0 with --hostile-every, else no limit",
    )


def parse_size_mix(text: str) -> list[tuple[str, int]]:
    """'small:8,medium:1' -> [('small', 8), ('medium', 1)], with a clear error for anything else."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            parse_size(name)
            value = int(weight) if weight else 1
        except ValueError as exc:
            raise ValueError(f"--size-mix {text!r}: {exc}") from None
        if value < 1:
            raise ValueError(f"--size-mix {text!r}: weight of {name} must be 1 or more")
        mix.append((name.strip(), value))
    if not mix:
        raise ValueError("--size-mix is empty; give at least one size class, e.g. small")
    return mix
