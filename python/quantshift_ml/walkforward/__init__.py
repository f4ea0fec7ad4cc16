"""The monthly walk-forward (``monthly``) and its many-market form (``universe``): reports on
the policy and families, never a release. May import: champion and below."""
