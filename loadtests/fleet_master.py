"""The master's view of a fleet: which worker belongs to which host, the hosts' reports, per-host totals."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field

from loadtests.adapters.stopping import collector_faults
from loadtests.fleet_host import HOST_ID_PATTERN
from loadtests.verify import SourceResult, Totals, _lines_explained_by_rejections

log = logging.getLogger("namedpiper")

# The section of workers that joined the master's port but never said which host they are (no host id can be
# spelled so): their lines are unverified, and they count as vanished workers.
UNANNOUNCED = "(unannounced)"

# A source is p<Locust worker index>u<user number>: the worker index ties it to its host.
SOURCE_WORKER = re.compile(r"^p(\d+)u\d+$")


@dataclass
class HostWorker:
    """One Locust worker of a fleet host, as it announced itself at the start of the run."""

    client_id: str
    index: int
    host: str
    owner: bool
    error: str = ""


@dataclass
class Fleet:
    """The master's bookkeeping of one fleet run."""

    workers: dict[str, HostWorker] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)  # host -> its owner's report after the drain

    def reset(self) -> None:
        """A new run."""
        self.workers.clear()
        self.reports.clear()

    def receive_hello(self, client_id: str, data: dict, index: int) -> None:
        """A worker's np_host message: its host and whether it owns the host's collector.

        The index is the one the master gave this client (not the message's): anyone who reaches the master port
        can send messages, so nothing a message says about who sent it is taken on trust.
        """
        host = str(data.get("host", ""))
        if not HOST_ID_PATTERN.fullmatch(host):
            log.warning("ignored a host announcement from %s: %r is no host id", client_id, host[:80])
            return
        self.workers[client_id] = HostWorker(
            client_id, index, host, bool(data.get("owner")), str(data.get("error") or "")
        )

    def receive_report(self, client_id: str, data: dict) -> None:
        """A host owner's np_host_report after its drain: taken once, and only from the worker that owns the host."""
        host = str(data.get("host", ""))
        owner = self.owner(host)
        if owner is None or owner.client_id != client_id or host in self.reports:
            log.warning(
                "ignored a report for host %r from %s: not the worker that runs its collector", host[:80], client_id
            )
            return
        self.reports[host] = dict(data)

    def note_unannounced(self, clients: dict[str, int]) -> list[HostWorker]:
        """Workers (client id -> index) that never announced a host: listed under UNANNOUNCED, returned."""
        found = [
            HostWorker(cid, index, UNANNOUNCED, False, "never announced its host")
            for cid, index in clients.items()
            if cid not in self.workers
        ]
        for w in found:
            self.workers[w.client_id] = w
        return found

    def hosts(self) -> dict[str, list[HostWorker]]:
        """Host -> its workers, hosts sorted by name."""
        out: dict[str, list[HostWorker]] = {}
        for w in sorted(self.workers.values(), key=lambda w: (w.host, w.index)):
            out.setdefault(w.host, []).append(w)
        return out

    def owner(self, host: str) -> HostWorker | None:
        """The worker that runs the host's collector."""
        return next((w for w in self.workers.values() if w.host == host and w.owner), None)

    def host_of_source(self, source: str) -> str | None:
        """The host whose worker wrote source, None when no worker of the fleet had its index."""
        m = SOURCE_WORKER.match(source)
        if m is None:
            return None
        index = int(m.group(1))
        return next((w.host for w in self.workers.values() if w.index == index), None)


def fleet_master_problem(options, is_master: bool) -> str:
    """Why this process cannot be a fleet's master ("" when it can): no --master, or faults given to it.

    The master runs no collector: a collector fault given to it would silently not happen, and the run would claim a
    fault it never made. Faults belong to the hosts that run the collectors.
    """
    if not is_master:
        return "--fleet needs --master (and Locust workers on the hosts: docs/fleet.md)"
    faults = collector_faults(options)
    if getattr(options, "db_outage_at", -1) >= 0:
        faults.append("--db-outage-at")
    if getattr(options, "statement_timeout_at", -1) >= 0:
        faults.append("--statement-timeout-at")
    if faults:
        return (
            f"--fleet: the master runs no collector, so {', '.join(faults)} would not happen; give faults to the "
            "hosts (their own command line, or --local-host-args 'host2: --kill-collector-at 5')"
        )
    return ""


def worker_of_source(source: str) -> int | None:
    """The Locust worker index in a source name, None for a name the harness did not make."""
    m = SOURCE_WORKER.match(source)
    return int(m.group(1)) if m else None


def lost(missing_unexplained: int, torn: int) -> int:
    """Missing lines that neither drops, the stop, nor torn rows explain (verify.py's rule)."""
    return max(0, missing_unexplained - _lines_explained_by_rejections(torn, missing_unexplained))


def split_unverified(
    sources: list[SourceResult], totals: Totals, unverified_indexes: set[int]
) -> tuple[list[SourceResult], list[SourceResult], Totals]:
    """(verified sources, sources of workers that disappeared, totals without the latter).

    A worker that disappeared sent no counters: its rows are in the database but nothing says what it sent, so its
    sources are neither landed nor lost in the totals, only listed as unverified.
    """
    gone = [s for s in sources if worker_of_source(s.source) in unverified_indexes]
    kept = [s for s in sources if worker_of_source(s.source) not in unverified_indexes]
    if not gone:
        return kept, gone, totals
    t = dataclasses.replace(totals)
    for s in gone:
        t.generated -= s.generated
        t.sent -= s.sent
        t.dropped -= s.dropped
        t.interrupted -= s.interrupted
        t.landed -= s.landed
        t.duplicated -= s.duplicated
        t.out_of_order -= s.out_of_order
        t.corrupt -= s.corrupt
        t.missing -= s.missing
    t.torn_or_rejected = t.unexplained_rejections + t.corrupt
    t.lost = lost(sum(max(0, s.missing - s.dropped - s.interrupted) for s in kept), t.torn_or_rejected)
    return kept, gone, t


def host_sections(
    fleet: Fleet, sources: list[SourceResult], vanished: dict[str, HostWorker], last_sent: dict[str, float]
) -> list[dict]:
    """One section per host: its workers, totals over its sources, its collector's figures and faults, its state.

    Rejected lines (logs_rejected) carry no source, so a host's `torn` counts its corrupt rows only; the run's
    totals count the rejections too.
    """
    sections = []
    for host, workers in fleet.hosts().items():
        indexes = {w.index for w in workers}
        mine = [s for s in sources if worker_of_source(s.source) in indexes]
        report = fleet.reports.get(host, {})
        gone = [w for w in workers if w.client_id in vanished]
        errors = [w.error for w in workers if w.error]
        owners = [w for w in workers if w.owner]
        if len(owners) > 1:
            state = (
                f"error: {len(owners)} workers each run a collector for host {host}: do machines share a "
                "--host-id (or a hostname)? Give each host its own"
            )
        elif errors:
            state = f"cannot start: {errors[0]}"
        elif gone:
            state = "worker disappeared: " + ", ".join(f"{w.client_id} (index {w.index})" for w in gone)
        elif not report:
            state = "sent no report"
        elif report.get("error"):
            state = f"error: {report['error']}"
        else:
            state = "reported"
        unexplained = sum(max(0, s.missing - s.dropped - s.interrupted) for s in mine)
        corrupt = sum(s.corrupt for s in mine)
        collector = report.get("collector") or {}
        sections.append(
            {
                "host": host,
                "state": state,
                "workers": [{"client_id": w.client_id, "index": w.index, "owner": w.owner} for w in workers],
                "sources": len(mine),
                "sent": sum(s.sent for s in mine),
                "landed": sum(s.landed for s in mine),
                "missing": sum(s.missing for s in mine),
                "lost": lost(unexplained, corrupt),
                "duplicated": sum(s.duplicated for s in mine),
                "torn": corrupt,
                "rows_per_s": report.get("rows_per_s"),
                "collector_peak_rss_mib": report.get("collector_peak_rss_mib"),
                "collector_exit": report.get("collector_exit"),
                "collector_exit_text": collector.get("exit"),
                "faults": list(report.get("faults") or []),
                "report_dir": report.get("report_dir"),
                "unverified_sent_last_report": sum(int(last_sent.get(w.client_id, 0)) for w in gone),
            }
        )
    return sections
