"""The contest at every retrain: the families, their out-of-time record and the policy that
picks the champion. May import: training and everything below it."""
