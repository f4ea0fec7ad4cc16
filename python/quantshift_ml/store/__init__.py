"""The on-host model store: signed files, layout, atomic promotion, backups, locks, leases.
May import: ``errors`` and ``defaults`` only (it knows files and signatures, not models)."""

from quantshift_ml.store.layout import Layout, default_root
from quantshift_ml.store.lock import StoreLock
from quantshift_ml.store.store import ModelStore

__all__ = ["Layout", "ModelStore", "StoreLock", "default_root"]
