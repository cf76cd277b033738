"""Reference emitter and collector: JSON log events through a Linux FIFO into PostgreSQL."""
