"""What a fine-tune request must pass before anything is recorded.

The payload's shape is the schema's (:mod:`workers.schemas`); this checks what it names on
the worker's side of the world: the model (a spec, a registered version, a folder under
the roots, a hub id a spec names) and the datasets, training and validation (existing
files under the roots). A request refused here leaves no row behind, instead of a job that
is ``queued`` now and ``failed`` later.
"""

from __future__ import annotations

from pathlib import Path

from core.config import get_settings
from embedding.data.examples import DataError, first_row_width
from embedding.models.hub import ensure_under_roots
from embedding.models.specs import get_spec
from workers.schemas import FinetuneRequest, PayloadError
from workers.serving.model_names import checked_model_name
from workers.tenancy import scope_of


class DatasetNotFound(FileNotFoundError):
    """The dataset named in a request is not a file (under the allowed roots)."""


def check_request(request: FinetuneRequest) -> int | None:
    """Raise ``UnknownModel``, ``PathNotAllowed`` or :class:`DatasetNotFound` for a request
    that names what the workers may not or cannot use, and :class:`PayloadError` for
    ``matryoshka`` on a model without Matryoshka dims.

    Returns the training rows' width (2: pairs, 3: triplets), which picks the recipe for
    the settings the request leaves unset; None when a dataset's first row cannot be read
    (the job then fails on the worker with the file's error, as before)."""
    model = checked_model_name(request.model, scope=scope_of(request.project))
    if request.matryoshka and not get_spec(model).matryoshka_dims:
        raise PayloadError(
            f"matryoshka: model {request.model!r} declares no Matryoshka dims; "
            "submit without matryoshka"
        )
    dataset = checked_dataset(request.dataset) if request.dataset is not None else None
    if request.validation_dataset is not None:
        checked_dataset(request.validation_dataset, "validation_dataset")
    if dataset is None:
        return request.inline_row_width()
    try:
        return first_row_width(dataset)
    except DataError:
        return None


def checked_dataset(dataset: str, what: str = "dataset") -> Path:
    """The file a payload's ``dataset`` (or ``validation_dataset``) names: under the roots
    (``PathNotAllowed``) and a file (:class:`DatasetNotFound`)."""
    path = Path(ensure_under_roots(dataset, get_settings().model_roots, what=what))
    if not path.is_file():
        raise DatasetNotFound(f"{what} {dataset!r} is not a file")
    return path
