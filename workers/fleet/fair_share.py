"""Which waiting job runs next: the oldest of the project that has used least of its share.

A project's *use* is its recent training GPU-seconds (``db/repo/usage.py``: each day's
weighed by a half-life, today's whole) plus what its running attempts have run so far; its
*share* is its weight. The next job belongs to the project with the least use per weight
(Slurm's fair-share factor, Kueue's fair sharing of idle quota, reduced to one number);
ties go to the project whose oldest waiting job is older, so a project alone on the fleet,
or projects with equal use, run first-in-first-out. A project at its running-jobs quota is
passed over: its jobs wait, they are not refused.

A pure function of what the dispatcher read, so the order is tested without any server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Project:
    """What fair share knows of a project: its weight, its running-jobs quota (None: none),
    its use (GPU-seconds) and its jobs sent and not ended (``in_flight``)."""

    weight: float
    max_running_jobs: int | None
    used_s: float
    in_flight: int

    @property
    def use_per_share(self) -> float:
        return self.used_s / self.weight

    def may_run_another(self) -> bool:
        return self.max_running_jobs is None or self.in_flight < self.max_running_jobs


def pick(waiting: Sequence[tuple[str, str]], projects: Mapping[str, Project]) -> str | None:
    """The job id to send next, or None when every waiting job's project is at its quota.

    ``waiting``: (job id, project id), oldest first; ``projects``: every project that has a
    waiting job (a project missing here has weight 1, no quota, no use)."""
    oldest: dict[str, tuple[int, str]] = {}
    for position, (job_id, project_id) in enumerate(waiting):
        oldest.setdefault(project_id, (position, job_id))
    candidates = [
        (projects.get(pid, DEFAULT).use_per_share, position, job_id)
        for pid, (position, job_id) in oldest.items()
        if projects.get(pid, DEFAULT).may_run_another()
    ]
    return min(candidates)[2] if candidates else None


DEFAULT = Project(weight=1.0, max_running_jobs=None, used_s=0.0, in_flight=0)
