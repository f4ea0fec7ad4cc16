"""quantshift_ml: the market-regime classifier behind the QuantShift fleet.

Everything the Ansible layer, the service and the monitor do is implemented
here once; they only call this package's public API or its CLI.
"""

__version__ = "0.1.0"

REGIMES: tuple[str, ...] = ("Bull", "Bear", "High Vol", "Low Vol", "Crisis")
"""The five regimes, in a fixed order so confusion matrices are comparable."""
