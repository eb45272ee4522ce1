"""Schema migrations from code: ``embedctl db upgrade`` / ``embedctl db current`` call these.

The Alembic configuration is built here rather than read from ``alembic.ini``, so it works
the same from a checkout and from an installed wheel: the migrations folder is found next
to this package (``migrations/`` is installed alongside ``db/``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool

from db.session import database_url, make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for ``url`` (default: the settings), without an ini file."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic migrations at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    # Through attributes, not sqlalchemy.url: a URL-encoded password holds '%', which the
    # ini-style option would try to interpolate.
    config.attributes["url"] = database_url(url)
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: the settings) up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table); no default on purpose."""
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The database's revision (comma-joined if several heads), or None if unmigrated."""
    engine = make_engine(database_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    return ",".join(sorted(heads)) or None


def head() -> str | None:
    """The newest revision in the migrations folder (what ``upgrade()`` goes to)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
