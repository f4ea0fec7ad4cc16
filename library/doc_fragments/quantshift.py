# Copyright: QuantShift
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the options every QuantShift module shares (module_utils/quantshift_common)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  root:
    description: Store root on the host.
    type: path
    default: /opt/quantshift
  keys:
    description:
      - Keys directory on the host (C(trusted/*.pub), and C(signing.key) on the training
        host). Every model is loaded only after its metadata's signature checks out against
        a trusted key there.
    type: path
    default: /etc/quantshift/keys
  keep_backups:
    description: Backups to keep; default the package's (C(quantshift_ml.defaults.KEEP_BACKUPS)).
    type: int
requirements:
  - quantshift_ml in the interpreter running the module
"""

    SOURCE = r"""
options:
  source:
    description: Market-data source.
    type: str
    choices: [bundled, csv, yfinance]
    default: bundled
  data:
    description: CSV path for O(source=csv).
    type: path
  symbol:
    description: Ticker for O(source=yfinance).
    type: str
    default: SPY
  as_of:
    description: Last bar of the data used (YYYY-MM-DD); default the newest.
    type: str
"""
