"""Assemble the reference collector from its settings: a FIFO source (journaled or not) and the COPY sink."""

from __future__ import annotations

from reference.collector.collector import Collector, CollectorConfig
from reference.collector.journal import Journal
from reference.collector.loader import Loader
from reference.collector.reader import FifoReader
from reference.collector.source import FifoSource, JournaledSource, Source
from reference.collector.stop import StopRequest
from reference.collector.writer import CopySink


def open_source(config: CollectorConfig) -> Source:
    """Create or open the FIFO, and the journal when one is asked for."""
    reader = FifoReader(config.fifo, mode=config.fifo_mode, pipe_size=config.pipe_size)
    if not config.journal:
        return FifoSource(reader)
    try:
        journal = Journal(config.journal, fsync=config.fsync, max_bytes=config.journal_max_bytes)
    except BaseException:
        reader.close()
        raise
    return JournaledSource(reader, journal)


def build_collector(config: CollectorConfig, stop: StopRequest) -> Collector:
    """The source, the PostgreSQL sink (its thread starts connecting at once) and the loop between them."""
    source = open_source(config)
    loader = Loader(config.dsn, apply_schema_at_start=config.apply_schema, journal_id=source.journal_id)
    sink = CopySink(loader, durable=source.durable, stop=stop)
    return Collector(config, source, sink, stop)
