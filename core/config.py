"""The one settings object, read from the environment (prefix ``EMBEDDING_``).

Every layer reads configuration from here, so a deployment is described by its
environment alone (see the table in ARCHITECTURE.md). Secrets (passwords in the
database or broker URL) come only from the environment and are never logged:
use :func:`redact_url` before printing a URL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, each with the description the README's configuration table shows
    (:func:`settings_table` renders it; ``tests/test_readme_settings.py`` keeps them equal)."""

    model_config = SettingsConfigDict(env_prefix="EMBEDDING_", extra="ignore")

    database_url: str = Field(
        "sqlite:///./embedding.db",
        description="SQLAlchemy URL of the record; production: `postgresql+psycopg://…`",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker; unset: an in-process worker on a memory broker "
        "(the embedded default); production: `redis://…`",
    )
    result_backend: str | None = Field(
        None,
        description="Celery result backend; unset: follows the broker (chords need Redis's; "
        "see `docs/architecture.md`)",
    )
    artifacts_dir: Path = Field(
        Path("./artifacts"),
        description="where jobs write checkpoints and models, the API its files and batches; "
        "production: a shared volume",
    )
    device: str = Field("auto", description="`auto` (CUDA if present), `cuda` or `cpu`")
    gpus: str = Field(
        "",
        description="the devices of `embedctl worker`'s gpu pool, one pool child (one job) "
        "each: comma-separated GPU ids (`0,1,2,3`), or `cpu:0,cpu:1,…` (a CPU host told it has "
        "that many, for tests); empty: `CUDA_VISIBLE_DEVICES`, else every visible GPU (none: "
        "one child, as on a CPU host)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="precision of the models workers load to embed, benchmark and evaluate "
        "(fine-tunes train at the measured default); `auto`: the model's default, bf16 only "
        "where a matrix product measured at load runs faster in it than in fp32",
    )
    default_model: str = Field("minilm", description="the model used when none is named")
    # Set from artifacts_dir when not given (see _roots_default).
    model_roots: list[Path] = Field(
        default_factory=list,
        description="JSON list of folders under which a model folder or dataset named in a "
        "task payload must lie; unset: the artifacts directory (the CLI may load any folder)",
    )

    max_texts_per_request: int = Field(4096, description="texts per embed request, at most")
    max_chars_per_text: int = Field(100_000, description="characters per text, at most")
    max_triplets_per_job: int = Field(200_000, description="training rows per job, at most")

    model_cache_max_models: int = Field(2, description="models one worker process keeps loaded")
    model_cache_max_mb: float = Field(
        8_000.0, description="megabytes of weights one worker process keeps loaded"
    )
    worker_max_tasks_per_child: int = Field(
        50, description="a worker child is replaced after this many tasks (hands GPU memory back)"
    )

    job_lease_s: float = Field(
        30.0,
        description="a running job's lease, seconds: a redelivered job whose lease is older "
        "is taken over (and resumed)",
    )
    job_max_attempts: int = Field(
        3, description="a job whose worker is lost this many times is failed"
    )

    finetune_soft_time_limit: int = Field(
        6 * 3600, description="fine-tune soft time limit, seconds"
    )
    finetune_hard_time_limit: int = Field(
        6 * 3600 + 300,
        description="fine-tune hard time limit, seconds (the Redis visibility timeout is set above it)",
    )

    api_keys: str = Field(
        "",
        description="comma-separated bearer keys of the HTTP API; none: `embedctl serve` "
        "binds to loopback only",
    )
    api_max_upload_bytes: int = Field(100_000_000, description="upload cap of `POST /v1/files`")
    api_max_body_bytes: int = Field(64_000_000, description="cap on any other request body")
    api_embed_timeout_s: float = Field(
        120.0, description="how long the API waits for an `embedding.embed` reply before a 504"
    )
    batch_chunk_texts: int = Field(
        1024, description="a batch runs as Celery tasks of at most this many texts each"
    )

    beat_redis_url: str | None = Field(
        None,
        description="where `embedctl beat` keeps its schedule and lock; unset: the broker. A "
        "database of its own, so that flushing the broker's never takes the scheduler with it",
    )
    relay_every_s: float = Field(5.0, description="the beat sends what the outbox holds this often")
    rescue_every_s: float = Field(
        15.0, description="the beat looks for jobs whose message is gone this often"
    )
    rescue_after_s: float = Field(
        60.0,
        description="a `queued` job sent this long ago with no message waiting in its queue is "
        "re-sent (as is a `running` one with an expired lease)",
    )
    checkpoint_every_steps: int = Field(
        0, description="a checkpoint inside an epoch every this many steps (0: by time only)"
    )
    checkpoint_every_s: float = Field(
        600.0, description="a checkpoint inside an epoch at least this often, seconds"
    )
    job_keep_checkpoints: int = Field(
        0,
        description="checkpoints a finished job keeps besides its model (never optimizer state)",
    )

    embed_batch_wait_ms: float = Field(
        4.0,
        description="an embed worker runs waiting requests with the same model and settings as "
        "one batch once the oldest has waited this long (or the token budget is full)",
    )
    embed_passes: int = Field(
        0,
        ge=0,
        description="forward passes an embed worker runs side by side, each on one core, so "
        "batches overlap; 0: one per core (one on a GPU); 1: one at a time on every core",
    )
    api_coalesce_wait_ms: float = Field(
        2.0, description="the API coalesces concurrent `/v1/embeddings` calls this long"
    )
    rate_limit_url: str | None = Field(
        None,
        description="where the API processes count each project's embeddings per minute "
        "(a `limits` storage URL: `redis://…`, `memory://`); unset: the broker's Redis, or "
        "this process's memory without one",
    )
    # On by default: the first validation after a start went 16-17 s -> 10.5 s on 2 CPU
    # cores (benchmarks/RESULTS.md); a worker listens about 3 s later for it.
    warm_up: bool = Field(
        True,
        description="`embedctl worker` imports the model code (and touches the GPU) in its gpu "
        "and embed pools as they start, so the first request does not pay for it",
    )
    # The CLI's processes keep the Rust tokenizers single-threaded (a process that forks
    # after their thread pool ran gets a child with it disabled, and a warning); a pool's
    # own process or prefork child never forks, so there a batch may be tokenized on every
    # core: 2,000 code texts 445 -> 254 ms on 2 cores, time a GPU idles before its first
    # pass. On a CPU the forward passes need those cores: serving on 2 cores measured no
    # gain (benchmarks/serve.py), so `auto` turns it on only for pools on a GPU.
    tokenizer_parallelism: Literal["auto", "on", "off"] = Field(
        "auto",
        description="`embedctl worker` pools tokenize a call's texts on every core "
        "(TOKENIZERS_PARALLELISM in the pool's own process or prefork child); auto: where "
        "the pool's models run on a GPU",
    )
    compile_blocks: bool = Field(
        False,
        description="compile the transformer blocks each loaded model runs inference with "
        "(torch.compile: fused kernels; each model compiles as it loads)",
    )
    embed_worker_concurrency: int = Field(
        64,
        description="threads of an `embedctl worker --queues embed`: the most requests it holds, "
        "hence its largest batch",
    )
    torch_threads_gpu: int = Field(
        0,
        ge=0,
        description="torch intra-op threads of the gpu pool (training, checks); 0: the cores "
        "split between the pools that run torch in the worker (gpu and embed)",
    )
    torch_interop_threads_gpu: int = Field(
        0, ge=0, description="torch inter-op threads of the gpu pool; 0: 1"
    )
    torch_threads_embed: int = Field(
        0,
        ge=0,
        description="torch intra-op threads of the embed pool (and its parallel passes); 0: "
        "its share of the cores (all of them when it runs alone)",
    )
    torch_interop_threads_embed: int = Field(
        0, ge=0, description="torch inter-op threads of the embed pool; 0: 1"
    )
    torch_threads_cpu: int = Field(
        0, ge=0, description="torch intra-op threads of the cpu pool (bookkeeping); 0: 1"
    )
    torch_interop_threads_cpu: int = Field(
        0, ge=0, description="torch inter-op threads of the cpu pool; 0: 1"
    )
    cache_url: str | None = Field(
        None,
        description="the embedding cache: a Redis of its own with an eviction policy, never the "
        "broker's; unset: no cache",
    )
    cache_ttl_s: int = Field(30 * 24 * 3600, description="how long a cached vector lives, seconds")
    fleet_gpu_slots: int = Field(
        0,
        ge=0,
        description="jobs the fleet runs at once, for fair-share dispatch; 0: the gpu pool "
        "children the workers record on a Redis broker (at least 1)",
    )
    fair_share_half_life_days: float = Field(
        1.0,
        gt=0,
        description="fair share weighs a project's training GPU-seconds of d days ago by "
        "0.5 ** (d / this)",
    )

    @model_validator(mode="after")
    def _roots_default(self) -> Settings:
        """Models saved by jobs live under the artifacts directory, so by default that is the
        one root: a worker can embed with what it trained, wherever its working directory is."""
        if "model_roots" not in self.model_fields_set:
            self.model_roots = [self.artifacts_dir]
        return self


def settings_table() -> str:
    """The README's configuration table: every ``EMBEDDING_*`` variable, its default and
    what it does, from the fields above (``python scripts/readme_settings.py`` writes it)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"setting {name} has no description")
        if name == "model_roots":
            default = "`[EMBEDDING_ARTIFACTS_DIR]`"
        elif field.default is None:
            default = "unset"
        elif isinstance(field.default, Path) and not field.default.is_absolute():
            default = f"`./{field.default}`"
        else:
            default = f"`{field.default}`" if field.default != "" else "empty"
        rows.append(f"| `EMBEDDING_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()


def redact_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    if not url:
        return str(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
