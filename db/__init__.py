"""Persistence: the ORM (``models``), engines and sessions (``session``), the reads and
writes the workers need (``repo/``, one module per entity), value checks (``values``) and
schema migrations (``migrate``). Imports ``core`` for settings; never the ML core, the
workers or the API."""
