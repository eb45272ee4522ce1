"""A/B evaluations end to end on the embedded default (SQLite, memory broker): ``embedctl
compare`` on the real minilm (against itself, and against a randomly initialised copy),
``embedctl report`` listing them, and the ``embedding.compare`` task on the in-process worker,
sent by the client and by plain ``send_task``."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from db.repo import ALL_PROJECTS
from tests.tiny_models import build_tiny_bert
from workers.cli import main

# Queries that share almost no words with their code: a model must know what code means.
PAIRS = [
    ("add two numbers", "def add(a, b): return a + b"),
    ("read a file into a string", "def read(path): return open(path).read()"),
    ("reverse a list", "def rev(xs): return xs[::-1]"),
    ("sort users by age", "users.sort(key=lambda u: u.age)"),
    ("select all rows from a table", "SELECT * FROM t"),
    ("fetch a web page over HTTP", "requests.get(url).text"),
    ("square root of a number", "math.sqrt(x)"),
    ("current date and time", "datetime.now()"),
    ("parse JSON text", "json.loads(s)"),
    ("sleep for one second", "time.sleep(1)"),
    ("make a directory", "os.makedirs(path, exist_ok=True)"),
    ("random integer between 1 and 6", "random.randint(1, 6)"),
    ("convert a string to upper case", "s.upper()"),
    ("count words in a sentence", "len(text.split())"),
    ("merge two dictionaries", "{**a, **b}"),
    ("remove duplicates from a list", "list(dict.fromkeys(items))"),
]


def _write_pairs(path: Path, pairs=PAIRS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"query": q, "document": d}) + "\n" for q, d in pairs))
    return path


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """No broker, a migrated SQLite file of this test's own, artifacts (the model roots)
    under the test's folder."""
    from core.config import get_settings
    from db import migrate
    from db.session import dispose_engines

    for key in list(os.environ):
        if key.startswith("EMBEDDING_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'embedding.db'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EMBEDDING_DEVICE", "cpu")
    get_settings.cache_clear()
    migrate.upgrade(url)
    yield tmp_path
    dispose_engines()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """minilm's architecture and tokenizer with random weights: it has learned nothing."""
    return build_tiny_bert(tmp_path_factory.mktemp("damaged") / "model")


def _recorded() -> list[dict]:
    from workers.jobs.evaluation_run import recent

    return recent(100, scope=ALL_PROJECTS)


@pytest.mark.slow
def test_minilm_against_itself_is_no_significant_difference_with_a_zero_interval(embedded, capsys):
    data = _write_pairs(embedded / "pairs.jsonl", PAIRS[:6])
    out = embedded / "out.json"
    assert main(["compare", "minilm", "minilm", "--data", str(data), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "VERDICT: no significant difference (on mrr@10)" in printed
    evaluation = json.loads(out.read_text())
    assert evaluation["verdict"] == "no significant difference"
    for interval in evaluation["differences"].values():
        assert interval == {"b_minus_a": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert evaluation["metrics_a"] == evaluation["metrics_b"]
    assert set(evaluation["metrics_a"]) == {"mrr@10", "recall@1", "ndcg@10"}
    (stored,) = _recorded()
    assert stored == evaluation  # what was printed is what was recorded
    assert (stored["trigger"], stored["status"], stored["n_resamples"], stored["seed"]) == (
        "cli",
        "succeeded",
        1000,
        0,
    )
    assert stored["data"] == {
        "name": str(data.resolve()),
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "rows": 6,
    }
    assert stored["model_a"] == {"name": "minilm", "loaded": "minilm", "version": None}


@pytest.mark.slow
def test_minilm_beats_a_damaged_copy_and_swapping_them_flips_the_verdict(embedded, damaged, capsys):
    data = _write_pairs(embedded / "pairs.jsonl")
    common = ["--data", str(data), "--resamples", "2000", "--seed", "7", "--json"]
    assert main(["compare", "minilm", str(damaged), *common, str(embedded / "ab.json")]) == 0
    assert "VERDICT: A better" in capsys.readouterr().out
    assert main(["compare", str(damaged), "minilm", *common, str(embedded / "ba.json")]) == 0
    assert "VERDICT: B better" in capsys.readouterr().out
    ab = json.loads((embedded / "ab.json").read_text())
    ba = json.loads((embedded / "ba.json").read_text())
    mrr = ab["differences"]["mrr@10"]
    assert mrr["ci_high"] < 0, mrr  # the whole interval says minilm (A) is better
    assert ab["metrics_a"]["mrr@10"] > 0.9 > 0.5 > ab["metrics_b"]["mrr@10"]
    # Same data, seed and resamples in the other order: B - A is negated, interval mirrored.
    flipped = ba["differences"]["mrr@10"]
    assert flipped["b_minus_a"] == pytest.approx(-mrr["b_minus_a"])
    assert (flipped["ci_low"], flipped["ci_high"]) == pytest.approx(
        (-mrr["ci_high"], -mrr["ci_low"])
    )
    assert ab["model_b"]["loaded"] == str(damaged)

    # embedctl report lists both, newest first, with the verdicts; the page has them too.
    assert main(["report", "--out", str(embedded / "report")]) == 0
    report = capsys.readouterr().out
    lines = [line for line in report.splitlines() if "mrr@10" in line]
    assert len(lines) == 2
    assert lines[0].endswith("B better") and lines[1].endswith("A better")
    page = (embedded / "report" / "index.html").read_text()
    assert page.count("data-evaluation=") == 2 and "A better" in page


def test_bad_input_is_refused_before_a_model_loads_and_nothing_is_recorded(embedded, capsys):
    triplets = embedded / "triplets.jsonl"
    triplets.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n")
    assert main(["compare", "minilm", "minilm", "--data", str(triplets)]) == 1
    assert "pairs" in capsys.readouterr().err
    data = _write_pairs(embedded / "pairs.jsonl", PAIRS[:3])
    assert main(["compare", "minilm", "no-such-model", "--data", str(data)]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the bounds of the shared constants
        main(["compare", "minilm", "minilm", "--data", str(data), "--resamples", "10"])
    assert "outside 100..100000" in capsys.readouterr().err
    assert _recorded() == []


def _wait_final(evaluation_id: str, seconds: float = 120.0) -> dict:
    from workers.client import evaluation_status

    deadline = time.monotonic() + seconds
    evaluation = evaluation_status(evaluation_id)
    while evaluation["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        evaluation = evaluation_status(evaluation_id)
    return evaluation


@pytest.mark.slow
def test_the_task_on_the_in_process_worker(embedded, monkeypatch):
    from workers.app import app, embedded_worker
    from workers.client import start_evaluation

    # The memory broker is polled once a second by default; poll as the embedded API does.
    options = {**app.conf.broker_transport_options, "polling_interval": 0.01}
    monkeypatch.setitem(app.conf, "broker_transport_options", options)

    data = _write_pairs(embedded / "artifacts" / "pairs.jsonl", PAIRS[:5])
    inline = [{"anchor": q, "positive": d} for q, d in PAIRS[:5]]
    with embedded_worker():
        # Recorded first (queued), then sent: the client's way, the API's way.
        evaluation_id = start_evaluation(
            "minilm", "minilm", dataset=str(data), data_name="file-xyz", n_resamples=200
        )
        evaluation = _wait_final(evaluation_id)
        # A service with only Celery: send_task by name, the reply is the evaluation.
        reply = app.send_task(
            "embedding.compare",
            kwargs={"model_a": "minilm", "model_b": "minilm", "pairs": inline, "seed": 3},
        ).get(timeout=120, disable_sync_subtasks=False)
        rejected = [
            app.send_task("embedding.compare", kwargs=payload).get(
                timeout=60, disable_sync_subtasks=False
            )
            for payload in (
                {"model_a": "minilm", "model_b": "minilm", "pairs": inline, "n_resamples": 5},
                {"model_a": "minilm", "model_b": "nope", "pairs": inline},
                {"model_a": "minilm", "model_b": "minilm", "dataset": "/etc/passwd"},
                {"model_a": "minilm", "model_b": "minilm"},
                {"model_a": "minilm", "model_b": "minilm", "pairs": inline, "evaluation_id": "x"},
            )
        ]

    assert evaluation["status"] == "succeeded", evaluation
    assert (evaluation["trigger"], evaluation["verdict"]) == ("api", "no significant difference")
    assert evaluation["data"] == {
        "name": "file-xyz",
        "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "rows": 5,
    }
    assert evaluation["n_resamples"] == 200
    assert evaluation["differences"]["mrr@10"] == {"b_minus_a": 0.0, "ci_low": 0.0, "ci_high": 0.0}

    assert reply["status"] == "succeeded" and reply["trigger"] == "task", reply
    assert (reply["seed"], reply["data"]["name"], reply["data"]["rows"]) == (3, "inline", 5)
    # The inline digest is that of the same pairs written as embedding.data.examples writes them.
    from embedding.data.examples import write_examples

    write_examples(embedded / "same.jsonl", PAIRS[:5])
    assert (
        reply["data"]["sha256"]
        == hashlib.sha256((embedded / "same.jsonl").read_bytes()).hexdigest()
    )

    assert [r["status"] for r in rejected] == ["rejected"] * 5
    assert all(r["evaluation_id"] is None for r in rejected)
    errors = [r["error"] for r in rejected]
    assert "n_resamples" in errors[0]
    assert errors[1].startswith("UnknownModel") and "'nope'" in errors[1]
    assert errors[2].startswith("PathNotAllowed")
    assert "exactly one of pairs or dataset" in errors[3]
    assert "evaluation_id must be a UUID" in errors[4]
    assert {e["id"] for e in _recorded()} == {evaluation_id, reply["id"]}, "refused: no rows"


def test_a_run_that_fails_ends_failed_with_its_reason(embedded):
    """The row exists (the API recorded it) and the data turns out bad on the worker: the
    evaluation ends ``failed`` with the line named, never stays ``running``."""
    from workers.jobs import evaluation_run
    from workers.schemas import CompareRequest

    bad = embedded / "artifacts" / "bad.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"anchor": "a", "positive": "b"}\n{oops\n')
    evaluation_id = evaluation_run.create("api", "minilm", "minilm", "file-bad", 1000, 0)
    request = CompareRequest(
        model_a="minilm", model_b="minilm", dataset=str(bad), evaluation_id=evaluation_id
    )
    failed = evaluation_run.run_request(request, load=lambda name: pytest.fail("loaded"))
    assert failed["status"] == "failed" and failed["verdict"] is None
    assert failed["error"].startswith("DataError") and "bad.jsonl:2: not JSON" in failed["error"]
    # A repeat of the message does not run it again.
    assert evaluation_run.run_request(request, load=lambda name: pytest.fail("loaded")) == failed


def test_a_run_whose_worker_was_killed_is_rerun_or_failed_by_the_lifeline(embedded):
    """A worker killed mid-compare records no outcome and its lease goes stale. The
    lifeline re-runs a lost evaluation a worker can read again (a dataset path), fails one
    it cannot (inline pairs are not kept; a CLI run's process is gone) or that was lost as
    often as the attempts cap allows, and each row's ``rescues`` says which and why. A
    run with a fresh lease and a finished one are left alone. (The kill itself, with real
    worker processes: tests/test_lifeline.py.)"""
    from datetime import timedelta

    from core.config import get_settings
    from db import repo
    from db.models import utcnow
    from db.session import session_scope
    from workers.jobs import evaluation_run
    from workers.lifeline import duties as lifeline

    data = str(_write_pairs(embedded / "artifacts" / "pairs.jsonl"))

    def started(trigger: str, dataset: str | None, attempts: int = 1) -> str:
        eid = evaluation_run.create(trigger, "minilm", "minilm", "x", 1000, 0, dataset=dataset)
        with session_scope() as session:
            assert repo.evaluations.start_evaluation(session, eid, "minilm", "minilm", "ab" * 32, 3)
            repo.evaluations.get_evaluation(
                session, eid, scope=repo.ALL_PROJECTS
            ).attempts = attempts
        return eid

    rerun, inline, cli, capped, alive, done = (
        started("api", data),
        started("task", None),
        started("cli", None),
        started("api", data, attempts=get_settings().job_max_attempts),
        started("api", data),
        started("api", data),
    )
    with session_scope() as session:
        metrics = {"mrr@10": 1.0}
        assert repo.evaluations.finish_evaluation(
            session, done, metrics, metrics, {}, "no significant difference"
        )
        stale = utcnow() - timedelta(seconds=get_settings().job_lease_s + 5)
        for eid in (rerun, inline, cli, capped, done):
            repo.evaluations.get_evaluation(
                session, eid, scope=repo.ALL_PROJECTS
            ).heartbeat_at = stale
    assert lifeline.rescue_evaluations(utcnow()) == {"rerun": 1, "failed": 3}

    again = evaluation_run.read(rerun, scope=ALL_PROJECTS)
    assert again["status"] == "queued" and again["error"] is None
    assert [r["action"] for r in again["rescues"]] == ["rerun"]
    assert "its lease expired" in again["rescues"][0]["reason"]
    for eid, why in (
        (inline, "its pairs were inline"),
        (cli, "the CLI process that ran it is gone"),
        (capped, "attempts cap"),
    ):
        row = evaluation_run.read(eid, scope=ALL_PROJECTS)
        assert row["status"] == "failed" and why in row["error"], row
        assert [r["action"] for r in row["rescues"]] == ["failed"]
    assert evaluation_run.read(alive, scope=ALL_PROJECTS)["status"] == "running"
    assert evaluation_run.read(done, scope=ALL_PROJECTS)["status"] == "succeeded"
    assert lifeline.rescue_evaluations(utcnow()) == {"rerun": 0, "failed": 0}  # once
