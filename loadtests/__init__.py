"""The namedpiper harness: Locust users that write a FIFO, the system under test's lifecycle, the verdict."""
