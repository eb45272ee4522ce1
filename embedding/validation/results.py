"""What a validation check returns, and how a check builds it with an honest status.

A failed criterion is a result, not an exception; an exception inside a check becomes status
``error`` with its reason (:func:`guarded`); a model that cannot be had is ``unavailable``.
Results cross the queue as JSON (:meth:`CheckResult.to_dict` / :meth:`CheckResult.from_dict`).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Criterion:
    name: str
    threshold: str
    actual: Any
    passed: bool


@dataclass
class CheckResult:
    name: str
    status: str  # passed / failed / unavailable / error
    figures: dict[str, Any] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)
    duration_s: float = 0.0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        criteria = [Criterion(**c) for c in data.get("criteria", [])]
        return cls(**{**data, "criteria": criteria})


class ResultBuilder:
    """Collects criteria and figures; turns them into a result with an honest status.

    Any failed criterion fails the check; with none failed, a model that could not be had
    makes it ``unavailable``; a check that judged nothing has not passed.
    """

    def __init__(self, name: str):
        self.name = name
        self.figures: dict[str, Any] = {}
        self.criteria: list[Criterion] = []
        self.unavailable: list[str] = []
        self.started = time.perf_counter()

    def load(self, model: Any, load: Callable[[Any], Any] | None = None) -> Any | None:
        """The loaded model, or ``None`` after noting why it could not be had (the check then
        reports ``unavailable``: a missing model is not a failed criterion)."""
        from embedding.inference.encoder import load_encoder
        from embedding.models.hub import ModelUnavailable

        try:
            return (load or load_encoder)(model)
        except ModelUnavailable as exc:
            self.unavailable.append(str(exc))
            return None

    def criterion(self, name: str, threshold: str, actual: Any, passed: bool) -> bool:
        self.criteria.append(Criterion(name, threshold, actual, bool(passed)))
        return bool(passed)

    def result(self) -> CheckResult:
        if any(not c.passed for c in self.criteria):
            status = "failed"
        elif self.unavailable:
            status = "unavailable"
        else:
            status = "passed" if self.criteria else "failed"
        return CheckResult(
            name=self.name,
            status=status,
            figures=self.figures,
            criteria=self.criteria,
            duration_s=time.perf_counter() - self.started,
            reason="; ".join(self.unavailable) or None,
        )


def guarded(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Run a check; an unexpected exception becomes status ``error`` with its reason."""

    def run(*args: Any, **kwargs: Any) -> CheckResult:
        started = time.perf_counter()
        try:
            return check(*args, **kwargs)
        except Exception as exc:
            name = check.__name__.removeprefix("check_")
            return CheckResult(
                name=name,
                status="error",
                duration_s=time.perf_counter() - started,
                reason=f"{type(exc).__name__}: {exc}",
                figures={"traceback": traceback.format_exc(limit=5)},
            )

    run.__name__ = check.__name__
    run.__doc__ = check.__doc__
    return run


def jsonable(value: Any) -> Any:
    """Plain JSON types only (numpy scalars -> float, tuples -> lists, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
