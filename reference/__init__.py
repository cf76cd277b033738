"""Reference emitter and collector: JSON log events through a Linux FIFO into PostgreSQL."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("namedpiper")
except PackageNotFoundError:  # a checkout that was never installed
    __version__ = "unknown"
VERSION_TEXT = f"%(prog)s (namedpiper {__version__})"
