"""Which model a task payload may name: a registered spec, or a folder under the allowed roots.

The CLI on a user's machine may load any folder; a payload comes from the queue, so a
path in it must resolve (symlinks followed) under ``EMBEDDING_MODEL_ROOTS``. Checked
before anything is recorded or loaded.
"""

from __future__ import annotations

from pathlib import Path

from embedding.config import get_settings
from embedding.hub import ensure_under_roots
from embedding.specs import all_specs, get_spec


def checked_model_name(name: str) -> str:
    """``name`` if it is a registered spec, a path under the roots resolved, else an error.

    Raises ``PathNotAllowed`` for a path outside the roots and ``UnknownModel`` (with the
    registered names) for anything else that is not a model.
    """
    if any(spec.name == name for spec in all_specs()):
        return name
    if "/" in name or name.startswith("."):
        candidate = Path(name)
        if candidate.exists() or name.startswith((".", "/", "~")):
            return str(ensure_under_roots(candidate, get_settings().model_roots))
    get_spec(name)  # raises UnknownModel with a clear message
    return name
