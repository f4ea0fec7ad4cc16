"""What the market did next: outcomes that neither arm nor family defines, and their
paired statistics. May import: model, data, store.

Owns the outcome definitions (``definitions``: forward volatility, forward
drawdown, the bot's money, and the settled state kept as "the model's own
target") and their paired comparison (``compare``). It reads only numpy, pandas
and the regime names: the A/B report, the monitor, the walk-forward and the
console import it, never the other way round.
"""

from quantshift_ml.outcomes.compare import compare_arms, economic_pair, paired_accuracy
from quantshift_ml.outcomes.definitions import (
    CALM,
    OUTCOMES,
    TURBULENT,
    WARNING_REGIMES,
    OutcomeConfig,
    economic_returns,
    forward_outcomes,
    score_arm,
)

__all__ = ["CALM", "OUTCOMES", "TURBULENT", "WARNING_REGIMES", "OutcomeConfig",
           "compare_arms", "economic_pair", "economic_returns", "forward_outcomes",
           "paired_accuracy", "score_arm"]
