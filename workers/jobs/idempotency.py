"""Idempotency keys, one rule for every way in: the same key and the same request give the
same job; the same key with another request is a conflict (as OpenAI and Stripe answer).

"The same request" is decided by :func:`request_digest`, a sha256 of the request's
canonical JSON (keys sorted, no whitespace, defaults filled in by the schema), stored on the
job when it is created (``finetune_jobs.request_sha256``). ``send_task``, the CLI and the
Python client digest the validated payload; the HTTP API digests its request body, which
names files where the payload names paths. The database's unique key decides a race: the
loser reads the winner's job and its digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


class IdempotencyConflict(ValueError):
    """The idempotency key was already used with a different request (for ``job_id``)."""

    def __init__(self, key: str, job_id: str | None):
        self.key = key
        self.job_id = job_id
        whose = f"job {job_id}" if job_id else "by another project"
        super().__init__(
            f"idempotency key {key!r} was already used with a different request "
            f"({whose}); use a new key for a new request"
        )


def request_digest(request: Any) -> str:
    """sha256 (hex) of ``request``'s canonical JSON."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_same_request(key: str | None, job: Any, digest: str, project_id: str) -> None:
    """Raise :class:`IdempotencyConflict` if ``job`` (found by ``key``) was made by another
    request, or in another project (whose job id is not told). A job from before digests
    were kept (none recorded) is taken as the same."""
    if key is not None and job.project_id != project_id:
        raise IdempotencyConflict(key, None)
    if key is not None and job.request_sha256 is not None and job.request_sha256 != digest:
        raise IdempotencyConflict(key, str(job.id))
