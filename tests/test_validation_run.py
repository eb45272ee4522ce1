"""workers.jobs.validation_run on SQLite: a run's rows from creation to verdict, and read back.

No broker: these are the functions the chord's tasks call, run directly.
"""

from __future__ import annotations

import pytest

from embedding.validation import CheckResult, Criterion
from workers.jobs import validation_run


@pytest.fixture
def database(tmp_path, monkeypatch):
    """The settings' database is a migrated SQLite file of this test's own."""
    from core.config import get_settings
    from db import migrate
    from db.session import dispose_engines

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate.upgrade(url)
    yield url
    dispose_engines()
    get_settings.cache_clear()


def _result(name: str, status: str, passed: bool = True, reason: str | None = None) -> dict:
    criteria = [Criterion("cosine > 0.5", "> 0.5", 0.9 if passed else 0.1, passed)]
    return CheckResult(
        name, status, figures={"dims": 384}, criteria=criteria, duration_s=0.25, reason=reason
    ).to_dict()


def _stored(run_id: str) -> tuple[str, str, str | None]:
    from db import repo
    from db.session import session_scope

    with session_scope() as session:
        run = repo.validations.get_validation_run(session, run_id, scope=repo.ALL_PROJECTS)
        return run.status, run.verdict, run.error


def test_every_check_passed_gives_passed(database):
    run_id = validation_run.create_run(["minilm"], trigger="cli")
    results = [_result("model_loading", "passed"), _result("convergence", "passed")]
    summary = validation_run.summarize_run(run_id, results)
    assert summary == {
        "run_id": run_id,
        "status": "passed",
        "verdict": "all 2 checks passed",
        "checks": results,
    }
    assert _stored(run_id) == ("passed", "all 2 checks passed", None)


def test_a_failed_criterion_gives_failed_and_names_the_check(database):
    run_id = validation_run.create_run(["minilm"], trigger="ci")
    results = [
        _result("model_loading", "passed"),
        _result("inference_quality", "failed", passed=False),
        _result("benchmark", "unavailable", reason="no GPU"),
    ]
    summary = validation_run.summarize_run(run_id, results)
    verdict = "2 of 3 checks did not pass: inference_quality (failed), benchmark (unavailable)"
    assert (summary["status"], summary["verdict"]) == ("failed", verdict)
    assert _stored(run_id) == ("failed", verdict, None)


def test_a_check_that_could_not_run_gives_error(database):
    run_id = validation_run.create_run(["minilm"], trigger="api")
    results = [
        _result("convergence", "failed", passed=False),
        _result("benchmark", "error", reason="RuntimeError: boom"),
    ]
    assert validation_run.summarize_run(run_id, results)["status"] == "error"
    assert _stored(run_id)[0] == "error"


def test_recorded_checks_read_back_in_the_report_shape(database):
    run_id = validation_run.create_run(["minilm"], trigger="cli")
    check = CheckResult.from_dict(_result("benchmark", "unavailable", reason="no GPU"))
    assert validation_run.record_check(run_id, check) == check.to_dict()
    validation_run.summarize_run(run_id, [check.to_dict()])
    run = validation_run.read_run(run_id)
    assert (run["run_id"], run["status"], run["trigger"], run["models"]) == (
        run_id,
        "failed",
        "cli",
        ["minilm"],
    )
    assert run["started_at"] and run["finished_at"]
    [stored] = run["checks"]
    assert stored == {
        "name": "benchmark",
        "status": "unavailable",
        "figures": {"dims": 384},  # the reason is stored with the figures, read back apart
        "criteria": check.to_dict()["criteria"],
        "duration_s": 0.25,
        "reason": "no GPU",
    }


def test_a_dead_check_task_ends_the_run_as_error(database):
    run_id = validation_run.create_run(["minilm"], trigger="api")
    validation_run.error_run(run_id, "a check task died: WorkerLostError()")
    assert _stored(run_id) == (
        "error",
        "error: a check task died: WorkerLostError()",
        "a check task died: WorkerLostError()",
    )
    assert validation_run.read_run(run_id)["checks"] == []


def test_reading_an_unknown_run_says_so(database):
    with pytest.raises(LookupError, match="no validation run"):
        validation_run.read_run("00000000-0000-0000-0000-000000000000")


def test_quality_runs_on_the_combined_profile_only_when_both_real_models_are_asked():
    assert validation_run.default_check_models(["qodo", "jina_v3"]) == {
        "inference_quality": "combined",
        "convergence": "qodo",
        "benchmark": "qodo",
    }
    assert validation_run.default_check_models(["minilm", "qodo"])["inference_quality"] == "minilm"
