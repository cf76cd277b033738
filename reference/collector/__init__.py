"""Reference collector: read JSON lines from a FIFO and bulk-load them into PostgreSQL with COPY."""
