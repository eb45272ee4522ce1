"""What every layer may import: the one settings object read from the environment.

``core.config`` holds :class:`~core.config.Settings` and ``get_settings()``. It lives below
every other package so that persistence (``db``), the workers and the API can read settings
without importing the ML core (``embedding``) and its torch stack. ``core`` imports nothing
of ours and no framework (no torch, Celery, SQLAlchemy or FastAPI): pydantic only.
"""
