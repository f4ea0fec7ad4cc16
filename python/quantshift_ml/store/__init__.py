"""The on-host model store: layout, metadata, atomic promotion, backups, lock."""

from quantshift_ml.store.layout import Layout, default_root
from quantshift_ml.store.lock import StoreLock
from quantshift_ml.store.store import ModelStore

__all__ = ["Layout", "ModelStore", "StoreLock", "default_root"]
