"""JSON payload schemas of the tasks (pydantic): what other services may send.

Every payload is validated before anything is written or loaded. Unknown fields are
errors (a typo must not be silently ignored), sizes are capped from settings, and the
messages name the field that was wrong. ``FinetuneRequest.model_json_schema()`` is the
documented schema for ``send_task("embedding.finetune_request", kwargs=...)``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.config import get_settings
from embedding.evaluation import compare as cmp
from embedding.training import hyperparameters as hp
from embedding.training.hyperparameters import Hyperparameter
from workers.serving.model_names import SUFFIX_PATTERN

T = TypeVar("T", bound=BaseModel)

__all__ = [
    "BenchmarkRequest",
    "CompareRequest",
    "EmbedRequest",
    "FinetuneRequest",
    "LoadModelRequest",
    "PayloadError",
    "ValidationError",
    "parse",
]


class PayloadError(ValueError):
    """A task payload that does not validate; the message lists every problem, one per field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def storable(value: str, field: str) -> str:
    """Refuse what PostgreSQL cannot store in text or JSON: NUL, and lone surrogates (not
    UTF-8 at all). A JSON message can carry both (``"\\u0000"``, ``"\\ud800"``)."""
    if "\x00" in value:
        raise ValueError(
            f"{field} contains a NUL character (U+0000) at character {value.index(chr(0))}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{field} contains a lone surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}"
        ) from None
    return value


def check_text_caps(texts: list[str], noun: str) -> list[str]:
    """The caps on texts to embed (how many, how long), one rule for the task payload and
    the HTTP API; ``noun`` is what the caller calls one of them ("text", "input")."""
    settings = get_settings()
    if len(texts) > settings.max_texts_per_request:
        raise ValueError(
            f"{len(texts)} {noun}s, more than the cap of {settings.max_texts_per_request}"
        )
    for i, text in enumerate(texts):
        if len(text) > settings.max_chars_per_text:
            raise ValueError(
                f"{noun} {i} has {len(text)} characters, "
                f"more than the cap of {settings.max_chars_per_text}"
            )
    return texts


def _check_text(value: str, field: str) -> str:
    storable(value, field)
    if not value.strip():
        raise ValueError(f"{field} is empty")
    cap = get_settings().max_chars_per_text
    if len(value) > cap:
        raise ValueError(f"{field} has {len(value)} characters, more than the cap of {cap}")
    return value


class Triplet(_Strict):
    anchor: str
    positive: str
    negative: str

    @field_validator("anchor", "positive", "negative")
    @classmethod
    def _text(cls, value: str, info) -> str:
        return _check_text(value, info.field_name)


class Pair(_Strict):
    anchor: str
    positive: str

    @field_validator("anchor", "positive")
    @classmethod
    def _text(cls, value: str, info) -> str:
        return _check_text(value, info.field_name)


def hyperparameter_field(h: Hyperparameter) -> Any:
    """A payload field with the default, bounds and help of the shared table; the cap applies
    (a payload comes from another service), and NaN or infinity is refused as not finite."""
    return Field(
        # The recipe's settings default to None: filled by the recipe for the job's rows
        # (embedding.training.hyperparameters.with_recipe) once their width is known.
        default=None if h.name in hp.RECIPE_NAMES else h.default,
        description=h.help,
        ge=h.ge,
        gt=h.gt,
        le=h.cap,
        **({"allow_inf_nan": False} if h.type is float else {}),
    )


# Where a job's validation set may come from: at most one of them.
VALIDATION_SOURCES = ("validation_triplets", "validation_pairs", "validation_dataset")


MAX_DEVICES_PER_JOB = 64  # one host's devices at most: a group never spans hosts


class FinetuneRequest(_Strict):
    """A fine-tune job: a model, training data (inline triplets or pairs, or a dataset path
    under the configured roots), optionally a validation set (the same three forms), and
    hyper-parameters.

    The validation set is evaluated before, after every epoch and after; it chooses the
    epoch whose weights become the version (``select_best_epoch``) and can stop training
    early (``early_stopping_patience``). Without one, a bounded sample of the training rows
    is evaluated before and after (:func:`embedding.training.loop.finetune`).

    Loss, epochs, lr and batch size left unset (None) come from the recipe for the rows
    (:func:`embedding.training.hyperparameters.recipe_for`): the submit fills them once it
    knows the rows' width (:meth:`with_recipe`), so the recorded job says what it trains
    with."""

    model: str = Field(min_length=1, max_length=500)
    triplets: list[Triplet] | None = None
    pairs: list[Pair] | None = None
    dataset: str | None = Field(default=None, max_length=4096)
    loss: Literal[hp.LOSS.choices] | None = hyperparameter_field(hp.LOSS)  # type: ignore[valid-type]
    epochs: int | None = hyperparameter_field(hp.EPOCHS)
    lr: float | None = hyperparameter_field(hp.LR)
    batch_size: int | None = hyperparameter_field(hp.BATCH_SIZE)
    margin: float = hyperparameter_field(hp.MARGIN)
    seed: int = hyperparameter_field(hp.SEED)
    mini_batch_size: int = hyperparameter_field(hp.MINI_BATCH_SIZE)
    matryoshka: bool = hyperparameter_field(hp.MATRYOSHKA)
    early_stopping_patience: int = hyperparameter_field(hp.EARLY_STOPPING_PATIENCE)
    select_best_epoch: bool = hyperparameter_field(hp.SELECT_BEST_EPOCH)
    symmetric_loss: bool | None = hyperparameter_field(hp.SYMMETRIC_LOSS)
    hard_negatives: int | None = hyperparameter_field(hp.HARD_NEGATIVES)
    guided_filter: bool | None = hyperparameter_field(hp.GUIDED_FILTER)
    hard_batches: bool | None = hyperparameter_field(hp.HARD_BATCHES)
    validation_triplets: list[Triplet] | None = None
    validation_pairs: list[Pair] | None = None
    validation_dataset: str | None = Field(default=None, max_length=4096)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    # Names the model version (<model>-<suffix>) and the ft: id (workers/serving/model_names.py).
    suffix: str | None = Field(default=None, pattern=f"^{SUFFIX_PATTERN}$")
    # The project (name or id) the job belongs to; unset: the ``default`` project.
    project: str | None = Field(default=None, min_length=1, max_length=64)
    # Devices of one worker host the job trains on as a data-parallel group ("all": every
    # device of the host that takes it); unset: 1 (left out of the recorded params and the
    # request digest, as before). The fleet counts the job as that many gpu slots.
    n_devices: int | Literal["all"] | None = Field(default=None)

    @field_validator("n_devices")
    @classmethod
    def _devices(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= MAX_DEVICES_PER_JOB:
            raise ValueError(f"n_devices must be 1..{MAX_DEVICES_PER_JOB} or 'all', got {value}")
        return value

    @field_validator("model", "dataset", "validation_dataset", "idempotency_key", "project")
    @classmethod
    def _storable(cls, value: str | None, info) -> str | None:
        return None if value is None else storable(value, info.field_name)

    @model_validator(mode="after")
    def _one_source(self) -> FinetuneRequest:
        given = [n for n in ("triplets", "pairs", "dataset") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of triplets, pairs or dataset (got {', '.join(given) or 'none'})"
            )
        rows = self.triplets if self.triplets is not None else self.pairs
        if rows is not None:
            if not rows:
                raise ValueError(f"{given[0]} is empty")
            cap = get_settings().max_triplets_per_job
            if len(rows) > cap:
                raise ValueError(f"{given[0]} has {len(rows)} rows, more than the cap of {cap}")
        if self.loss == "triplet" and self.pairs is not None:
            raise ValueError(
                "loss 'triplet' needs triplets; pairs train with loss 'mnrl' or 'cached_mnrl'"
            )
        self._check_validation()
        return self

    def _check_validation(self) -> None:
        given = [n for n in VALIDATION_SOURCES if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(given)}")
        rows = self.validation_triplets if self.validation_triplets is not None else None
        rows = self.validation_pairs if self.validation_pairs is not None else rows
        if rows is not None:
            if not rows:
                raise ValueError(f"{given[0]} is empty")
            cap = get_settings().max_triplets_per_job
            if len(rows) > cap:
                raise ValueError(f"{given[0]} has {len(rows)} rows, more than the cap of {cap}")
        if self.early_stopping_patience > 0 and not given:
            raise ValueError(
                "early_stopping_patience needs a validation set "
                f"({', '.join(VALIDATION_SOURCES)}): without one no epoch is evaluated"
            )

    def devices_asked(self) -> int | str:
        """``n_devices`` as the worker reads it: unset is 1."""
        return 1 if self.n_devices is None else self.n_devices

    def validation_rows(self) -> list[tuple[str, ...]] | None:
        """The inline validation rows as the trainer takes them (None: none inline)."""
        if self.validation_triplets is not None:
            return [(t.anchor, t.positive, t.negative) for t in self.validation_triplets]
        if self.validation_pairs is not None:
            return [(p.anchor, p.positive) for p in self.validation_pairs]
        return None

    def inline_row_width(self) -> int | None:
        """2 for inline pairs, 3 for inline triplets, None for a dataset (read on submit)."""
        if self.triplets is not None:
            return 3
        return 2 if self.pairs is not None else None

    def with_recipe(self, row_width: int | None) -> FinetuneRequest:
        """This request with its unset recipe settings filled for rows of ``row_width``
        (unchanged when the width is not known: the worker fills them from the rows)."""
        if row_width is None:
            return self
        values = {name: getattr(self, name) for name in hp.RECIPE_NAMES}
        return self.model_copy(update=hp.with_recipe(values, row_width))

    def hyperparameters(self) -> dict[str, Any]:
        """The shared hyper-parameters this request sets, as ``TrainConfig`` takes them, with
        the recipe for its inline rows where it sets none (a dataset's request is filled by
        :meth:`with_recipe` once its rows are read)."""
        values = {
            name: getattr(self, name)
            for name in hp.HYPERPARAMETERS
            if name in type(self).model_fields
        }
        width = self.inline_row_width()
        return hp.with_recipe(values, width) if width is not None else values


class EmbedRequest(_Strict):
    texts: list[str] = Field(min_length=1)
    model: str | None = None
    task: str | None = None
    truncate_dim: int | None = Field(default=None, ge=1)
    normalize: bool = True
    # "json": vectors as lists of floats (9 decimals, see tasks.json_vectors). "base64": one
    # little-endian float32 matrix, base64 encoded (rows x dim), bit-exact, ~2x smaller and
    # faster to move for big batches.
    encoding: Literal["json", "base64"] = "json"
    # False: neither read nor write the embedding cache (workers/serving/embedding_cache.py).
    cache: bool = True
    # Whose fine-tuned model names (``minilm-ft``) mean what; unset: the ``default`` project.
    project: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("texts")
    @classmethod
    def _caps(cls, texts: list[str]) -> list[str]:
        return check_text_caps(texts, "text")


class LoadModelRequest(_Strict):
    model: str = Field(min_length=1, max_length=500)


class BenchmarkRequest(_Strict):
    model: str = Field(min_length=1, max_length=500)
    iterations: int = Field(default=20, ge=10, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=4096)


class CompareRequest(_Strict):
    """An A/B comparison (``embedding.compare``): two model names, (query, document) pairs
    inline or a dataset path under the roots, and the bootstrap's resamples and seed.

    ``evaluation_id`` names an evaluation already recorded (``queued``) by the API or the
    client; without it the task records one of its own.
    """

    model_a: str = Field(min_length=1, max_length=500)
    model_b: str = Field(min_length=1, max_length=500)
    pairs: list[Pair] | None = None
    dataset: str | None = Field(default=None, min_length=1, max_length=4096)
    n_resamples: int = Field(
        default=cmp.DEFAULT_RESAMPLES, ge=cmp.MIN_RESAMPLES, le=cmp.MAX_RESAMPLES
    )
    seed: int = Field(default=0, ge=0, le=cmp.MAX_SEED)
    evaluation_id: str | None = Field(default=None, max_length=64)
    # The project the evaluation belongs to and whose model names it uses; unset: ``default``.
    project: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("model_a", "model_b", "dataset", "project")
    @classmethod
    def _storable(cls, value: str | None, info) -> str | None:
        return None if value is None else storable(value, info.field_name)

    @field_validator("evaluation_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"evaluation_id must be a UUID, got {value!r}") from None

    @model_validator(mode="after")
    def _one_source(self) -> CompareRequest:
        if (self.pairs is None) == (self.dataset is None):
            raise ValueError("give exactly one of pairs or dataset")
        if self.pairs is not None:
            if not self.pairs:
                raise ValueError("pairs is empty")
            cap = get_settings().max_triplets_per_job
            if len(self.pairs) > cap:
                raise ValueError(f"pairs has {len(self.pairs)} rows, more than the cap of {cap}")
        return self


def parse(schema: type[T], payload: object) -> T:
    """Validate a decoded JSON payload; raise :class:`PayloadError` with every problem named."""
    if not isinstance(payload, dict):
        raise PayloadError(
            f"{schema.__name__}: payload must be a JSON object, got {type(payload).__name__}"
        )
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PayloadError(f"{schema.__name__}: {problems}") from None
