"""Operations on a host: train/promote/rollback/verify (``operations``), the freeze, the
fleet decisions, ``doctor`` and the training log. May import: monitoring and below."""
