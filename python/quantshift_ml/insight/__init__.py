"""Why and which: SHAP/log-odds explanations (``explain``) and the A/B arms (``ab``) the
service serves. May import: walkforward and below (never serving or monitoring)."""
