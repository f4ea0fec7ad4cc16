# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What both QuantShift modules share: the import guard, common options, error mapping.

The modules only translate Ansible arguments to ``quantshift_ml`` and its results
back to JSON; everything that would otherwise be copied between them lives here
(and their common documentation in ``doc_fragments/quantshift.py``).
"""

from __future__ import annotations

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from quantshift_ml import defaults
    from quantshift_ml.errors import QuantshiftError
except ImportError:
    HAS_QUANTSHIFT = False
    IMPORT_ERROR = traceback.format_exc()
    defaults = None
    QuantshiftError = Exception
else:
    HAS_QUANTSHIFT = True
    IMPORT_ERROR = None

# Documented in doc_fragments/quantshift.py (``quantshift``); the values are the
# package's defaults (quantshift_ml.defaults), restated only because an argument
# spec must exist before the package can be imported.
COMMON_OPTIONS = dict(
    root=dict(type="path", default="/opt/quantshift"),
    keys=dict(type="path", default="/etc/quantshift/keys"),
    keep_backups=dict(type="int"),
)
SOURCE_OPTIONS = dict(  # doc fragment ``quantshift.source``
    source=dict(type="str", default="bundled", choices=["bundled", "csv", "yfinance"]),
    data=dict(type="path"),
    symbol=dict(type="str", default="SPY"),
    as_of=dict(type="str"),
)


def new_module(argument_spec, source=False, **kwargs):
    """An AnsibleModule with the common options, failed at once without the package.

    ``keys`` is exported as ``$QUANTSHIFT_KEYS``: every store this run opens (the
    package opens some itself) trusts exactly these keys.
    """
    spec = dict(COMMON_OPTIONS, **(SOURCE_OPTIONS if source else {}))
    spec.update(argument_spec)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **kwargs)
    if not HAS_QUANTSHIFT:
        module.fail_json(msg=missing_required_lib("quantshift_ml (run with the venv's python)"),
                         exception=IMPORT_ERROR)
    if module.params["keep_backups"] is None:
        module.params["keep_backups"] = defaults.KEEP_BACKUPS
    os.environ["QUANTSHIFT_KEYS"] = module.params["keys"]
    return module


def run_module(module, action):
    """Exit with ``action()``'s result; the package's errors as one ``fail_json`` each.

    A QuantshiftError keeps its type and exit code (the CLI's), so a playbook can
    tell a refused gate from a tampered file; an OSError (disk full, permissions)
    is one line, not a traceback.
    """
    try:
        result = action()
    except QuantshiftError as exc:
        module.fail_json(msg=str(exc), error_type=type(exc).__name__, exit_code=exc.exit_code)
    except ImportError:
        module.fail_json(msg=missing_required_lib("quantshift_ml's dependencies (run with the "
                                                  "venv's python)"),
                         exception=traceback.format_exc())
    except OSError as exc:
        module.fail_json(msg="%s: %s" % (type(exc).__name__, exc), error_type=type(exc).__name__)
    module.exit_json(**result)


def make_source(module):
    """The market-data source the module's source options name."""
    from quantshift_ml.data.sources import make_source as _make

    p = module.params
    return _make(p["source"], data=p["data"], symbol=p["symbol"], root=p["root"])
