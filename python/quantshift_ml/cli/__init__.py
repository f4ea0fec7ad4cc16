"""``quantshift-ml``: the parser, one module per command group, the text rendering.
May import: everything (console included); nothing imports it but ``__main__``."""

from quantshift_ml.cli.dispatch import main

__all__ = ["main"]
