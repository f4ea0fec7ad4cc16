"""The daily monitor: checks, drift, outcomes, the A/B report, thresholds, alerts and the
Prometheus textfile. May import: serving and below."""
