"""Serving a signed release: verified loading (``served``), the prediction log, the health
check and the HTTP service (``service``). May import: insight and below."""
