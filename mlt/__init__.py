"""mlt: mid-level transfer."""

__version__ = "0.1.0"
