"""``python -m quantshift_ml``: same as the ``quantshift-ml`` console script."""

import sys

from quantshift_ml.cli import main

sys.exit(main())
