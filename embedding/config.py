"""The one settings object, read from the environment (prefix ``EMBEDDING_``).

Every layer reads configuration from here, so a deployment is described by its
environment alone (see the table in ARCHITECTURE.md). Secrets (passwords in the
database or broker URL) come only from the environment and are never logged:
use :func:`redact_url` before printing a URL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDING_", extra="ignore")

    database_url: str = "sqlite:///./embedding.db"
    # Unset: an in-process worker on a memory broker (the embedded default).
    broker_url: str | None = None
    result_backend: str | None = None
    artifacts_dir: Path = Path("./artifacts")
    device: str = "auto"
    default_model: str = "minilm"

    # Roots under which a model folder named in a *task payload* must lie.
    # The CLI on a user's own machine may load any folder.
    model_roots: list[Path] = Field(default_factory=lambda: [Path("./artifacts")])

    # Input limits: clear errors instead of out-of-memory workers.
    max_texts_per_request: int = 4096
    max_chars_per_text: int = 100_000
    max_triplets_per_job: int = 200_000

    # Per-process model cache bounds (workers/model_cache.py).
    model_cache_max_models: int = 2
    model_cache_max_mb: float = 8_000.0
    # A worker child is replaced after this many tasks, handing its GPU memory back.
    worker_max_tasks_per_child: int = 50

    # A running job's lease: its worker refreshes it about every second while training; a
    # redelivered message may take over (and resume) a job whose lease is older than this.
    job_lease_s: float = 30.0
    # A job whose worker is lost this many times is failed instead of redelivered forever.
    job_max_attempts: int = 3

    # Periodic duties (workers/lifeline.py), run by `embedctl beat` (once per fleet, a Redis
    # lock) or in process by the embedded default: send what the outbox still holds; rescue
    # jobs whose message is gone (queued and sent this long ago without a message waiting
    # in the queue, or running with an expired lease) and fail those past the attempts cap.
    # Where the beat keeps its schedule and lock (default: the broker): a database of its
    # own, so that flushing the broker's never takes the scheduler with it.
    beat_redis_url: str | None = None
    relay_every_s: float = 5.0
    rescue_every_s: float = 15.0
    rescue_after_s: float = 60.0
    # Checkpoints inside an epoch (0: never by steps); a long epoch is never lost whole.
    checkpoint_every_steps: int = 0
    checkpoint_every_s: float = 600.0
    # After a job ends: checkpoints kept besides the registered model (without optimizer
    # state, which always goes).
    job_keep_checkpoints: int = 0

    # Fine-tune task time limits (seconds); the Redis visibility timeout is set above the hard one.
    finetune_soft_time_limit: int = 6 * 3600
    finetune_hard_time_limit: int = 6 * 3600 + 300

    # The HTTP API (api/). Keys: comma-separated bearer tokens; with none, `embedctl serve`
    # binds to loopback only.
    api_keys: str = ""
    # Upload cap for POST /v1/files, and a cap on any other request body.
    api_max_upload_bytes: int = 100_000_000
    api_max_body_bytes: int = 64_000_000
    # How long the API waits for an `embedding.embed` reply before answering 504.
    api_embed_timeout_s: float = 120.0
    # A batch runs as Celery tasks of at most this many texts each.
    batch_chunk_texts: int = 1024

    # Dynamic batching (workers/embed_batching.py, api/coalescer.py): concurrent embed
    # requests with the same model and settings run as one encoder batch, sent when the
    # oldest has waited this long or the batch reaches the encoder's token budget.
    embed_batch_wait_ms: float = 4.0
    api_coalesce_wait_ms: float = 2.0
    # Threads of an `embedctl worker --queues embed` (threads pool): how many requests it
    # holds at once, hence the largest batch it can form (prefetch multiplier 1 x this).
    embed_worker_concurrency: int = 64
    # The embedding cache (workers/embedding_cache.py): a Redis database of its own, on a
    # server with an eviction policy (allkeys-lru), never the broker's. Unset: no cache.
    cache_url: str | None = None
    cache_ttl_s: int = 30 * 24 * 3600


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
