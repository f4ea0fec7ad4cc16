"""Old module paths that pickles name, mapped to where the code lives now.

A pickle names the module of every class it holds. Releases and backups written
before the package took its lifecycle layout name ``quantshift_ml.regimes``
(the forest's ``RegimeModel``) and ``quantshift_ml.filterspec`` (a filter's
``FilterModel``); those modules moved to ``quantshift_ml.model``. Unpickling a
*verified* file registers each old name as an alias of its new module first, so
a backup from before the move still restores and a rollback still walks back.
The modules are imported by name only when a pickle is loaded: the store sits
below the model layer and never imports it at module level.
"""

from __future__ import annotations

import importlib
import io
import sys
from typing import Any

MOVED_MODULES: dict[str, str] = {
    "quantshift_ml.regimes": "quantshift_ml.model.regimes",
    "quantshift_ml.filterspec": "quantshift_ml.model.filterspec",
}
"""Old dotted module path (as pickled) -> the module that holds its classes now."""


def unpickle(content: bytes) -> Any:
    """Load verified joblib bytes, old module paths included (``MOVED_MODULES``)."""
    import joblib

    for old, new in MOVED_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
    return joblib.load(io.BytesIO(content))
