"""dtrtrust: a private registry's trust material on every node."""

__version__ = "0.1.0"
