"""Alembic migrations for the ``db`` schema (a package so it ships in the wheel).

Run them with ``embedctl db upgrade`` (see ``db/migrate.py``) or, in a checkout,
``alembic upgrade head`` with the ``alembic.ini`` at the repository root.
"""
