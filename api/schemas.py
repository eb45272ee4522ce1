"""Request and response bodies, in OpenAI's shapes (plus the fields we add, documented in
docs/api.md). Requests refuse unknown fields, like the task payloads do; responses are the
published schema that tests/test_api_schema.py holds every answer to."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from embedding.evaluation import compare as cmp
from embedding.training import hyperparameters as hp
from workers.schemas import check_text_caps
from workers.serving.model_names import SUFFIX_PATTERN


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------- embeddings
class EmbeddingRequest(_Request):
    input: str | list[str] = Field(
        description="A text or a list of texts (token arrays are not accepted)."
    )
    model: str = Field(min_length=1, max_length=500)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=500, description="Accepted, not used.")
    cache: bool = Field(
        default=True,
        description="Extension: false skips the embedding cache (neither read nor written).",
    )

    @field_validator("input")
    @classmethod
    def _caps(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is an empty list")
        check_text_caps(texts, "input")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


# ---------------------------------------------------------------- models
class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    dimensions: int | None = None
    matryoshka_dimensions: list[int] = []
    base_model: str | None = None
    fine_tuning_job: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool


# ---------------------------------------------------------------- files
class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = None
    rows: int


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


# ---------------------------------------------------------------- fine-tuning
class Hyperparameters(_Request):
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate: float | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    # Ours (with a validation_file): stop after this many epochs without a validation gain,
    # and export the best epoch rather than the last ("auto": embedding.training.hyperparameters).
    early_stopping_patience: int | Literal["auto"] = "auto"
    select_best_epoch: bool | Literal["auto"] = "auto"
    # Ours: the cached_mnrl loss's texts per forward pass (memory), and Matryoshka training
    # for models whose spec declares Matryoshka dims.
    mini_batch_size: int | Literal["auto"] = "auto"
    matryoshka: bool | Literal["auto"] = "auto"
    # Ours, the code-search recipe's levers ("auto": the recipe for the training file's rows;
    # embedding.training.hyperparameters.recipe_for): the symmetric MNRL loss, hard negatives
    # mined per pair from the training file, the starting model's in-batch false-negative filter.
    symmetric_loss: bool | Literal["auto"] = "auto"
    hard_negatives: int | Literal["auto"] = "auto"
    guided_filter: bool | Literal["auto"] = "auto"
    hard_batches: bool | Literal["auto"] = "auto"
    # Ours: devices of one worker host the job trains on as a data-parallel group ("all":
    # every device of that host; "auto": 1). Also accepted beside hyperparameters.
    n_devices: int | Literal["all", "auto"] = "auto"


class FineTuningJobRequest(_Request):
    model: str = Field(min_length=1, max_length=500)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    # None: the recipe for the training file's rows (pairs: mnrl; triplets: triplet).
    loss: Literal[hp.LOSS.choices] | None = None  # type: ignore[valid-type]
    suffix: str | None = Field(default=None, pattern=f"^{SUFFIX_PATTERN}$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # Ours: as hyperparameters.n_devices (either place; both must agree).
    n_devices: int | Literal["all"] | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate: float
    learning_rate_multiplier: float
    early_stopping_patience: int  # ours
    select_best_epoch: bool  # ours
    mini_batch_size: int  # ours (cached_mnrl)
    matryoshka: bool  # ours
    symmetric_loss: bool = False  # ours: the recipe's levers, as the job trains with them
    hard_negatives: int = 0
    guided_filter: bool = False
    hard_batches: bool = False
    n_devices: int | Literal["all"] = 1  # ours: the data-parallel group's size asked


class JobResult(BaseModel):
    """Ours (OpenAI's job has no such field): what training concluded, once it succeeded."""

    eval_source: str  # "validation" or "train-sample:N of M": what eval_before/after measured
    selected_by: str | None = None  # the validation metric: "mrr@10" or "triplet_accuracy"
    best_epoch: int | None = None  # the epoch with the best validation metric
    best_value: float | None = None
    exported_epoch: int | None = None  # whose weights are fine_tuned_model
    epochs_trained: int
    stopped_early: bool
    stop_reason: str | None = None  # why fewer epochs than asked: early stop, data exhausted
    eval_before: dict[str, float | None] = {}
    eval_after: dict[str, float | None] = {}
    world_size: int | None = None  # the devices the last attempt trained on (its group's size)


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: JobHyperparameters
    model: str
    organization_id: str = "local"
    result_files: list[str] = []
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str | None = None
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    loss: str
    suffix: str | None = None
    result: JobResult | None = None  # ours: set when the job succeeds
    project_id: str | None = None  # ours: the project the job belongs to


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool


class CheckpointMetrics(BaseModel):
    step: int
    train_loss: float
    lr: float | None = None
    duration_s: float | None = None
    samples_per_s: float | None = None
    eval: dict[str, Any] | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


# ---------------------------------------------------------------- validations
class ValidationRequest(_Request):
    models: list[str] | None = Field(default=None, min_length=1, max_length=10)
    checks: list[str] | None = Field(default=None, min_length=1, max_length=10)


class Criterion(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    passed: bool
    threshold: Any = None
    actual: Any = None


class ValidationCheck(BaseModel):
    name: str
    status: str
    figures: dict[str, Any]
    criteria: list[Criterion]
    duration_s: float | None = None
    reason: str | None = None


class ValidationRun(BaseModel):
    id: str
    object: Literal["validation_run"] = "validation_run"
    status: Literal["running", "passed", "failed", "error"]
    verdict: str | None = None
    trigger: str
    models: list[str]
    created_at: int
    finished_at: int | None = None
    checks: list[ValidationCheck]


# ---------------------------------------------------------------- A/B evaluations
class EvaluationRequest(_Request):
    model_a: str = Field(min_length=1, max_length=500, description="Model A: any model name.")
    model_b: str = Field(min_length=1, max_length=500, description="Model B: any model name.")
    data_file: str = Field(
        min_length=1,
        max_length=64,
        description="A file of purpose fine-tune holding (query, document) pairs.",
    )
    n_resamples: int = Field(
        default=cmp.DEFAULT_RESAMPLES, ge=cmp.MIN_RESAMPLES, le=cmp.MAX_RESAMPLES
    )
    seed: int = Field(default=0, ge=0, le=cmp.MAX_SEED)


class EvaluatedModel(BaseModel):
    name: str
    loaded: str | None = Field(default=None, description="The spec or folder the worker loaded.")
    version: str | None = Field(default=None, description="name:N of a registered version.")


class EvaluationData(BaseModel):
    file: str
    sha256: str | None = None
    rows: int | None = None


class EvaluationInterval(BaseModel):
    b_minus_a: float
    ci_low: float
    ci_high: float


class Evaluation(BaseModel):
    id: str
    object: Literal["evaluation"] = "evaluation"
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    model_a: EvaluatedModel
    model_b: EvaluatedModel
    data: EvaluationData
    primary_metric: str
    metrics_a: dict[str, float] | None = None
    metrics_b: dict[str, float] | None = None
    differences: dict[str, EvaluationInterval] | None = Field(
        default=None, description="Per metric: B - A and its 95 % paired bootstrap interval."
    )
    verdict: Literal["A better", "B better", "no significant difference"] | None = None
    n_resamples: int
    seed: int
    trigger: str
    error: str | None = None
    attempts: int = 0
    rescues: list[dict[str, Any]] = Field(
        default=[],
        description="What the lifeline did after a lost worker: re-run or failed, and why.",
    )


class EvaluationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Evaluation]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


# ---------------------------------------------------------------- batches
class BatchRequest(_Request):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchErrorData(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorData]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


def unix(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())
