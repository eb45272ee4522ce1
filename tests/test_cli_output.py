"""What the commands a person runs print: a short summary by default, the JSON behind --json.

``embedctl jobs show`` runs in process with ``workers.client.job_status`` replaced by a
recorded job, so the test needs no database; ``data codesearch`` and ``data mine-negatives``
run for real in ``tests/test_code_pairs.py`` and ``tests/test_mining.py``. The summaries'
wording is checked here on fixed figures.
"""

from __future__ import annotations

import json

import pytest

import workers.client
from workers.cli import main
from workers.cli.data import codesearch_summary, mining_summary

JOB_ID = "3f2c7a10-5b1e-4c8e-9a7e-2d6f0b1c9e11"


def recorded_job(**changes) -> dict:
    job = {
        "id": JOB_ID,
        "model": "minilm",
        "status": "succeeded",
        "error": None,
        "attempts": 2,
        "worker": "gpu-1@host",
        "params": {"epochs": 3, "loss": "mnrl", "lr": 5e-05, "batch_size": 32, "margin": None},
        "created_at": "2026-12-06T10:00:01.123456+00:00",
        "started_at": "2026-12-06T10:00:03.500000+00:00",
        "finished_at": "2026-12-06T10:02:10+00:00",
        "sent_at": "2026-12-06T10:00:01.200000+00:00",
        "model_version_id": 4,
        "model_version": "minilm-billing:2",
        "fine_tuned_model": f"ft:minilm:billing:{JOB_ID}",
        "result": {
            "eval_source": "validation",
            "selected_by": "mrr@10",
            "best_epoch": 2,
            "best_value": 0.84,
            "exported_epoch": 2,
            "epochs_trained": 3,
            "stopped_early": True,
            "stop_reason": None,
            "eval_before": {"mrr@10": 0.7, "recall@1": 0.6},
            "eval_after": {"mrr@10": 0.84, "recall@1": 0.72},
        },
        "epochs": [
            {
                "epoch": 1,
                "train_loss": 0.41234,
                "lr": 5e-05,
                "duration_s": 12.34,
                "samples_per_s": 40.1,
                "eval": {"mrr@10": 0.81, "recall@1": 0.7},
            },
            {
                "epoch": 2,
                "train_loss": 0.2,
                "lr": 3e-05,
                "duration_s": 11.0,
                "samples_per_s": 42.0,
                "eval": {"mrr@10": 0.84, "recall@1": 0.72},
            },
            {
                "epoch": 3,
                "train_loss": 0.15,
                "lr": 1e-05,
                "duration_s": None,
                "samples_per_s": None,
                "eval": None,
            },
        ],
        "events": [
            {
                "at": "2026-12-06T10:00:01.1+00:00",
                "event": "created",
                "message": "created (minilm)",
                "worker": None,
            },
            {
                "at": "2026-12-06T10:00:01.2+00:00",
                "event": "sent",
                "message": "sent to the gpu queue",
                "worker": None,
            },
            {
                "at": "2026-12-06T10:00:03.5+00:00",
                "event": "claimed",
                "message": "claimed by gpu-1@host (attempt 1)",
                "worker": "gpu-1@host",
                "data": {"attempt": 1, "taken_over": False},
            },
            {
                "at": "2026-12-06T10:01:00+00:00",
                "event": "retried",
                "message": "lease expired",
                "worker": "gpu-2@host",
            },
            {
                "at": "2026-12-06T10:02:10+00:00",
                "event": "succeeded",
                "message": "succeeded",
                "worker": None,
            },
        ],
    }
    return {**job, **changes}


@pytest.fixture
def show(monkeypatch, capsys):
    """Run ``embedctl jobs show`` on a recorded job; returns (exit code, stdout)."""

    def run(job: dict, *options: str) -> tuple[int, str]:
        asked = []
        monkeypatch.setattr(
            workers.client, "job_status", lambda job_id: asked.append(job_id) or job
        )
        code = main(["jobs", "show", JOB_ID, *options])
        assert asked == [JOB_ID]
        return code, capsys.readouterr().out

    return run


def test_jobs_show_prints_the_job_for_a_person(show):
    code, out = show(recorded_job())
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"job {JOB_ID}: succeeded"
    assert (
        f"  model     minilm -> minilm-billing:2 (embed with ft:minilm:billing:{JOB_ID})" in lines
    )
    assert "  params    epochs 3, loss mnrl, lr 5e-05, batch_size 32" in lines  # None left out
    assert (
        "  times     created 2026-12-06 10:00:01, started 2026-12-06 10:00:03, "
        "finished 2026-12-06 10:02:10"
    ) in lines
    assert "  attempts  2, last worker gpu-1@host" in lines
    header = lines.index("  epoch  train loss        s   rows/s  validation")
    assert lines[header + 1 : header + 4] == [
        "      1      0.4123     12.3     40.1  mrr@10 0.8100, recall@1 0.7000",
        "      2      0.2000     11.0     42.0  mrr@10 0.8400, recall@1 0.7200",
        "      3      0.1500        -        -",
    ]
    assert "  best epoch 2 of 3 by validation mrr@10 0.8400" in lines
    assert "  the model version holds epoch 2's weights" in lines
    assert "  stopped early (no validation gain)" in lines
    assert (
        "  before -> after (validation): mrr@10 0.7000 -> 0.8400, recall@1 0.6000 -> 0.7200"
    ) in lines
    timeline = lines[lines.index("  timeline") + 1 :]
    assert timeline == [
        "    2026-12-06 10:00:01  created (minilm)",
        "    2026-12-06 10:00:01  sent to the gpu queue",
        "    2026-12-06 10:00:03  claimed by gpu-1@host (attempt 1)",  # worker named once
        "    2026-12-06 10:01:00  lease expired  [gpu-2@host]",
        "    2026-12-06 10:02:10  succeeded",
    ]
    assert "{" not in out and "null" not in out


def test_jobs_show_of_a_queued_job_and_a_failed_one(show):
    queued = recorded_job(
        status="queued",
        attempts=0,
        worker=None,
        started_at=None,
        finished_at=None,
        model_version=None,
        fine_tuned_model=None,
        result=None,
        epochs=[],
        events=recorded_job()["events"][:1],
    )
    code, out = show(queued)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"job {JOB_ID}: queued"
    assert "  model     minilm" in lines and "  attempts  0" in lines
    assert "  times     created 2026-12-06 10:00:01" in lines
    assert "  no epoch finished yet" in lines and "best epoch" not in out

    failed = recorded_job(status="failed", error="ValueError: loss is NaN at epoch 1, step 11")
    code, out = show(failed)
    assert "  error     ValueError: loss is NaN at epoch 1, step 11" in out.splitlines()


def test_jobs_show_json_is_the_whole_job(show):
    job = recorded_job()
    code, out = show(job, "--json")
    assert code == 0
    assert json.loads(out) == job


CODESEARCH_REPORT = {
    "sources": [
        {"label": "stdlib", "kind": "stdlib", "root": "/usr/lib/python3.11"},
        {"label": "./repo", "kind": "folder", "root": "/src/repo"},
    ],
    "pairs": {"train": 2584, "eval": 190},
    "files": {"read": 575, "train_with_pairs": 300, "eval_with_pairs": 30, "parse_errors": 2},
    "by_language": {
        "go": {"train": 84, "eval": 0},
        "python": {"train": 2500, "eval": 190},
    },
    "by_source": {"stdlib": {"train": 2500, "eval": 190}, "./repo": {"train": 84, "eval": 0}},
    "skipped": {"bytecode": 41, "generated": 5, "tests": 5},
    "functions_without_pair": {"private": 5526, "no_doc": 4478},
    "dropped": {"duplicate_query": 134, "near_duplicate_code": 36},
    "seconds": 6.4521,
    "files_per_second": 89.1,
}


def test_the_codesearch_summary():
    assert codesearch_summary(CODESEARCH_REPORT, "data").splitlines() == [
        "2,774 pairs (2,584 train, 190 eval) from 575 files of stdlib, ./repo in 6.5 s",
        "",
        "  language    train     eval",
        "  go             84        0",
        "  python      2,500      190",
        "",
        "skipped folders and files: 51 (bytecode 41, generated 5, tests 5)",
        "dropped as duplicates: 170 (same query 134, near-identical code 36)",
        "functions without a pair: 10,004 (private 5,526, no doc 4,478)",
        "files that did not parse: 2",
        "wrote to data: train.jsonl and eval.jsonl (for finetune --data / --eval-data), "
        "their .meta.jsonl,",
        "  and report.json (the whole report; --json prints it)",
    ]
    quiet = {**CODESEARCH_REPORT, "skipped": {}, "dropped": {}, "functions_without_pair": {}}
    quiet["files"] = {**quiet["files"], "parse_errors": 0}
    text = codesearch_summary(quiet, "data")
    assert "skipped folders and files: none" in text
    assert "dropped" not in text and "without a pair" not in text and "parse" not in text


MINING_STATS = {
    "out": "triplets.jsonl",
    "pairs": 400,
    "anchors": 398,
    "corpus": 2636,
    "triplets": 396,
    "anchors_mined": 396,
    "anchors_short": 0,
    "anchors_dropped": 2,
    "pairs_dropped": 4,
    "skipped_false_negatives": 4376,
    "anchors_guarded": 120,
    "mean_positive_score": 0.4812,
    "mean_negative_score": 0.3701,
}


def test_the_mining_summary():
    assert mining_summary(MINING_STATS, "triplet", 1).splitlines() == [
        "396 triplets from 400 pairs (398 distinct anchors), negatives from 2,636 candidate texts",
        "anchors with 1 negative: 396",
        "left out: 4 pairs (2 anchors with no valid negative)",
        "false-negative guard: 4,376 candidates skipped; 120 anchors lost their top-scoring "
        "candidate to it",
        "mean cosine to the anchor: positive 0.481, negative 0.370",
        "wrote triplets.jsonl",
    ]
    # n-tuples: an anchor with fewer than asked is left out too
    stats = {**MINING_STATS, "triplets": 393, "anchors_short": 3, "pairs_dropped": 7}
    lines = mining_summary(stats, "n-tuple", 5).splitlines()
    assert lines[0].startswith("393 n-tuples, 5 negatives each, from 400 pairs")
    assert lines[1] == "anchors with 5 negatives: 393, with fewer: 3"
    assert lines[2] == "left out: 7 pairs (2 anchors with no valid negative, 3 with fewer than 5)"
    clean = {**MINING_STATS, "anchors_dropped": 0, "pairs_dropped": 0, "triplets": 400}
    assert not any(
        line.startswith("left out") for line in mining_summary(clean, "triplet", 1).splitlines()
    )
