"""Model versions, benchmark results and validation runs in db/repo.py, on both backends."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from db import repo
from db.repo import InvalidValue, NotFound

pytest_plugins = ("tests.conftest_db",)

Factory = Callable[[], Session]
Rows = Callable[[str], int]
SHA = "0123456789abcdef" * 4


def _figures(**overrides: Any) -> dict[str, Any]:
    figures = {
        "model": "minilm",
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 64,
        "latency_p50_ms": 10.0,
        "latency_p95_ms": 12.5,
        "latency_p99_ms": 14.0,
        "latency_mean_ms": 10.4,
        "latency_min_ms": 9.1,
        "latency_max_ms": 15.2,
        "throughput_per_s": 6100.0,
        "grad_step_ms": 31.0,
        "optimizer_step_ms": None,
        "peak_memory_mb": 512.0,
        "package_version": "0.1.0",
        "host": "ci-1",
    }
    return {**figures, **overrides}


# ------------------------------------------------------------------ model versions
def test_model_versions_count_up_per_name(session: Session) -> None:
    first = repo.versions.register_model_version(
        session, "minilm-ft", "minilm", "/a/1", SHA, {"m": 1}, project_id="proj_default"
    )
    second = repo.versions.register_model_version(
        session, "minilm-ft", "minilm", "/a/2", SHA, None, project_id="proj_default"
    )
    other = repo.versions.register_model_version(
        session, "qodo-ft", "qodo", "/b/1", SHA, {}, project_id="proj_default"
    )
    session.commit()
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.metrics == {"m": 1} and second.metrics == {}
    assert first.created_at.tzinfo is not None


def test_registering_the_same_weights_again_returns_that_version(
    session: Session, rows: Rows
) -> None:
    first = repo.versions.register_model_version(
        session, "m-ft", "m", "/a/1", SHA.upper(), {}, project_id="proj_default"
    )
    again = repo.versions.register_model_version(
        session, "m-ft", "m", "/a/1", SHA, {"x": 1}, project_id="proj_default"
    )
    session.commit()
    assert again.id == first.id and again.weights_sha256 == SHA
    assert rows("model_versions") == 1


def test_concurrent_registrations_get_distinct_versions(new_session: Factory, rows: Rows) -> None:
    n = 4
    barrier = threading.Barrier(n)
    versions: list[int] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with new_session() as session:
                barrier.wait(timeout=10)
                v = repo.versions.register_model_version(
                    session, "m-ft", "m", f"/p/{i}", SHA, {}, project_id="proj_default"
                )
                versions.append(v.version)
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(versions) == list(range(1, n + 1))
    assert rows("model_versions") == n


def test_bad_model_versions_are_refused(session: Session, rows: Rows) -> None:
    with pytest.raises(InvalidValue, match="weights_sha256 must be 64 hex digits"):
        repo.versions.register_model_version(
            session, "m", "m", "/p", "xyz", {}, project_id="proj_default"
        )
    with pytest.raises(InvalidValue, match="name"):
        repo.versions.register_model_version(
            session, "", "m", "/p", SHA, {}, project_id="proj_default"
        )
    with pytest.raises(InvalidValue, match="metrics must be a JSON object"):
        repo.versions.register_model_version(
            session, "m", "m", "/p", SHA, [1], project_id="proj_default"
        )
    session.commit()
    assert rows("model_versions") == 0


# ------------------------------------------------------------------ benchmarks
def test_benchmark_results_and_history(session: Session) -> None:
    first = repo.benchmarks.add_benchmark_result(session, **_figures())
    repo.benchmarks.add_benchmark_result(session, **_figures(model="qodo", grad_step_ms=None))
    latest = repo.benchmarks.add_benchmark_result(
        session, **_figures(latency_p50_ms=np.float32(9.5), batch_size=np.int64(32))
    )
    session.commit()
    assert first.optimizer_step_ms is None and first.throughput_per_s == 6100.0
    assert isinstance(latest.latency_p50_ms, float) and latest.batch_size == 32
    history = repo.benchmarks.benchmark_history(session, model="minilm")
    assert [r.id for r in history] == [latest.id, first.id]
    assert len(repo.benchmarks.benchmark_history(session)) == 3
    assert [r.id for r in repo.benchmarks.benchmark_history(session, limit=1)] == [latest.id]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"latency_p99_ms": math.nan}, "latency_p99_ms must be finite"),
        ({"throughput_per_s": -1.0}, "throughput_per_s must be >= 0"),
        ({"latency_p50_ms": "10ms"}, "latency_p50_ms must be a number"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"device": ""}, "device must be a non-empty string"),
        ({"colour": "blue"}, "unknown benchmark figures"),
    ],
)
def test_bad_benchmark_figures_are_refused(
    session: Session, rows: Rows, overrides: dict, message: str
) -> None:
    with pytest.raises(InvalidValue, match=message):
        repo.benchmarks.add_benchmark_result(session, **_figures(**overrides))
    session.commit()
    assert rows("benchmark_results") == 0


def test_missing_benchmark_figures_are_named(session: Session) -> None:
    figures = _figures()
    del figures["host"], figures["peak_memory_mb"]  # peak memory is optional, host is not
    with pytest.raises(InvalidValue, match=r"missing benchmark figures \['host'\]"):
        repo.benchmarks.add_benchmark_result(session, **figures)


# ------------------------------------------------------------------ validation
CRITERIA = [
    {"name": "mrr", "threshold": ">= 0.5", "actual": 0.61, "passed": True},
    {"name": "latency", "threshold": "<= 50 ms", "actual": 12.0, "passed": True},
]


def test_a_validation_run_from_start_to_verdict(new_session: Factory) -> None:
    with new_session() as session:
        run = repo.validations.create_validation_run(
            session, "ci", ["minilm", "qodo"], project_id="proj_default"
        )
        session.commit()
        run_id = run.id
        assert run.status == "running" and run.models == ["minilm", "qodo"]
    with new_session() as session:
        repo.validations.record_validation_check(
            session, str(run_id), "inference_quality", "passed", {"mrr": 0.61}, CRITERIA, 1.5
        )
        repo.validations.record_validation_check(
            session, run_id, "benchmark", "unavailable", {"reason": "no GPU"}, [], 0.1
        )
        assert repo.validations.finish_validation_run(
            session, run_id, "passed", "all 2 checks passed"
        )
        session.commit()
    with new_session() as session:
        run = repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS)
        assert (run.status, run.verdict, run.error) == ("passed", "all 2 checks passed", None)
        assert run.finished_at is not None and run.finished_at >= run.started_at
        assert [c.name for c in run.checks] == ["benchmark", "inference_quality"]
        quality = run.checks[1]
        assert quality.criteria == CRITERIA and quality.figures == {"mrr": 0.61}
        assert quality.duration_s == 1.5
        # the first verdict stands
        assert not repo.validations.finish_validation_run(
            session, run_id, "error", "late", error="x"
        )
        assert (
            repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS).status
            == "passed"
        )


def test_a_retried_check_replaces_its_row(new_session: Factory, rows: Rows) -> None:
    with new_session() as session:
        run_id = repo.validations.create_validation_run(
            session, "cli", ["minilm"], project_id="proj_default"
        ).id
        repo.validations.record_validation_check(
            session, run_id, "convergence", "error", {}, [], 0.5
        )
        session.commit()
    with new_session() as session:
        run = repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS)
        assert [c.status for c in run.checks] == ["error"]
        check = repo.validations.record_validation_check(
            session,
            run_id,
            "convergence",
            "failed",
            {"loss": math.nan, "losses": [1.0, math.inf]},
            [{"name": "loss falls", "threshold": "< 0.9", "actual": math.nan, "passed": False}],
            2.0,
        )
        session.commit()
        assert check.status == "failed" and check.figures == {"loss": None, "losses": [1.0, None]}
        assert check.criteria[0]["actual"] is None
        assert [c.status for c in run.checks] == ["failed"]  # the loaded run sees it
    assert rows("validation_checks") == 1


def test_latest_validation_run(new_session: Factory) -> None:
    with new_session() as session:
        assert repo.validations.latest_validation_run(session, scope=repo.ALL_PROJECTS) is None
        repo.validations.create_validation_run(
            session, "cli", ["minilm"], project_id="proj_default"
        )
        session.commit()
        newer = repo.validations.create_validation_run(
            session, "api", ["qodo"], project_id="proj_default"
        )
        session.commit()
        repo.validations.record_validation_check(
            session, newer.id, "model_loading", "passed", {}, [], 1.0
        )
        session.commit()
        latest = repo.validations.latest_validation_run(session, scope=repo.ALL_PROJECTS)
        assert latest.id == newer.id and [c.name for c in latest.checks] == ["model_loading"]
        assert (
            repo.validations.get_validation_run(session, uuid.uuid4(), scope=repo.ALL_PROJECTS)
            is None
        )


def test_bad_validation_values_are_refused_and_leave_no_rows(
    new_session: Factory, rows: Rows
) -> None:
    with new_session() as session:
        with pytest.raises(InvalidValue, match="unknown trigger 'cron'"):
            repo.validations.create_validation_run(
                session, "cron", ["minilm"], project_id="proj_default"
            )
        with pytest.raises(InvalidValue, match="models must be a list"):
            repo.validations.create_validation_run(
                session, "cli", "minilm", project_id="proj_default"
            )
        session.commit()
    assert rows("validation_runs") == 0
    with new_session() as session:
        run_id = repo.validations.create_validation_run(
            session, "cli", ["minilm"], project_id="proj_default"
        ).id
        session.commit()
        bad_checks = [
            (("x", "skipped", {}, [], 1.0), "unknown check status 'skipped'"),
            (("x", "passed", {}, [{"name": "c"}], 1.0), r"criteria\[0\].passed"),
            (("x", "passed", {}, [{"passed": True}], 1.0), r"criteria\[0\].name"),
            (("x", "passed", {}, {"c": 1}, 1.0), "criteria must be a list"),
            (("x", "passed", {}, [], -1.0), "duration_s must be >= 0"),
            (("", "passed", {}, [], 1.0), "check name"),
        ]
        for args, message in bad_checks:
            with pytest.raises(InvalidValue, match=message):
                repo.validations.record_validation_check(session, run_id, *args)
        with pytest.raises(NotFound):
            repo.validations.record_validation_check(
                session, uuid.uuid4(), "x", "passed", {}, [], 1.0
            )
        with pytest.raises(InvalidValue, match="unknown run status 'ok'"):
            repo.validations.finish_validation_run(session, run_id, "ok", "fine")
        with pytest.raises(InvalidValue, match="final run status"):
            repo.validations.finish_validation_run(session, run_id, "running", "fine")
        with pytest.raises(NotFound):
            repo.validations.finish_validation_run(session, uuid.uuid4(), "passed", "fine")
        session.commit()
        assert (
            repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS).status
            == "running"
        )
    assert rows("validation_checks") == 0
