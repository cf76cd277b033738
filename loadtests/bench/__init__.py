"""The pipeline benchmark: `python -m loadtests.bench` (or `tox -e bench`) measures every stage on one seeded data set.

One run prints a table and writes JSON: the COPY limit of the server, the reference collector end to end, a naive
collector (readline + one INSERT per line, what the original README's collector did), the collector's peak memory
and emit-to-visible latency, raw FIFO throughput, and how fast EventFactory, the emitter and Locust generate lines.
Targets are shown next to the figures as PASS/MISS; they are informational, never an exit code.
"""
