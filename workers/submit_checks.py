"""What a fine-tune request must pass before anything is recorded.

The payload's shape is the schema's (:mod:`workers.schemas`); this checks what it names on
the worker's side of the world: the model (a spec, a registered version, a folder under
the roots, a hub id a spec names) and the dataset (an existing file under the roots). A
request refused here leaves no row behind, instead of a job that is ``queued`` now and
``failed`` later.
"""

from __future__ import annotations

from pathlib import Path

from embedding.config import get_settings
from embedding.hub import ensure_under_roots
from workers.model_names import checked_model_name
from workers.schemas import FinetuneRequest


class DatasetNotFound(FileNotFoundError):
    """The dataset named in a request is not a file (under the allowed roots)."""


def check_request(request: FinetuneRequest) -> None:
    """Raise ``UnknownModel``, ``PathNotAllowed`` or :class:`DatasetNotFound` for a request
    that names what the workers may not or cannot use."""
    checked_model_name(request.model)
    if request.dataset is not None:
        checked_dataset(request.dataset)


def checked_dataset(dataset: str) -> Path:
    """The file a payload's ``dataset`` names: under the roots (``PathNotAllowed``) and a
    file (:class:`DatasetNotFound`)."""
    path = Path(ensure_under_roots(dataset, get_settings().model_roots, what="dataset"))
    if not path.is_file():
        raise DatasetNotFound(f"dataset {dataset!r} is not a file")
    return path
