"""Choosing the epoch: the best validation epoch is exported (not the last), early stopping
stops after K epochs without a gain, a resume keeps the best, the default eval is a bounded
sample of the training rows and says so, and a job registers the best epoch and says which.

A tiny BERT (random weights, minilm's tokenizer) trains in a fraction of a second per epoch.
The validation set is built to turn against training: it pairs each query with the *next*
pair's code, while MNRL on the training pairs pulls every query towards its own code and
away from the others, so after the first epoch its MRR@10 falls. Every test still reads the
best epoch off the recorded per-epoch figures (the first of the highest) and checks that it
is not the last, so none can pass by exporting the last epoch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from embedding.training.config import CheckpointMismatch, TrainConfig
from embedding.training.epoch_hooks import eval_sample
from embedding.training.epoch_selection import select
from embedding.training.loop import finetune
from tests.tiny_models import build_tiny_bert

PAIRS = [
    ("read a file into a string", "def read_text(path): return open(path).read()"),
    ("sum of a list of numbers", "def total(xs): return sum(xs)"),
    ("reverse a string", "def reverse(s): return s[::-1]"),
    ("count the words in a text", "def words(t): return len(t.split())"),
    ("largest item of a list", "def biggest(xs): return max(xs)"),
    ("join path parts", "def join(*parts): return '/'.join(parts)"),
    ("square every number", "def squares(xs): return [x * x for x in xs]"),
    ("is the number even", "def even(n): return n % 2 == 0"),
]
AGAINST = [(PAIRS[i][0], PAIRS[(i + 1) % len(PAIRS)][1]) for i in range(len(PAIRS))]


def _config(**kw) -> TrainConfig:
    return TrainConfig(loss="mnrl", lr=1e-3, batch_size=4, precision="fp32", warmup_ratio=0.0, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert"))


def _best_of(figures: list[dict[str, float]], metric: str = "mrr@10") -> int:
    """The 1-based epoch with the highest ``metric``; the earliest on a tie."""
    values = [f[metric] for f in figures]
    return 1 + values.index(max(values))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same(exported: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor]) -> bool:
    """The checkpoint's every tensor is in the export, bit for bit."""
    assert set(checkpoint) <= set(exported), "export and checkpoint name the weights alike"
    return all(torch.equal(exported[name], tensor) for name, tensor in checkpoint.items())


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """One uninterrupted 3-epoch run with checkpoints and a validation set, shared."""
    folder = tmp_path_factory.mktemp("reference")
    result = finetune(
        tiny,
        PAIRS,
        _config(epochs=3),
        out_dir=folder / "out",
        checkpoint_dir=folder / "ckpt",
        eval_examples=AGAINST,
    )
    best = _best_of([e.eval for e in result.epochs])
    assert best != 3, f"the construction should make an early epoch best: {result.epochs}"
    return result, best, folder


# ------------------------------------------------------------------ the selection rule
def test_selection_takes_the_first_of_the_highest_and_counts_epochs_without_gain():
    def epoch(n: int, value: float | None) -> dict:
        return {"epoch": n, "eval": {} if value is None else {"mrr@10": value}}

    history = [epoch(1, 0.5), epoch(2, 0.7), epoch(3, 0.7), epoch(4, math.nan), epoch(5, 0.6)]
    chosen = select(history)
    assert (chosen.metric, chosen.best_epoch, chosen.best_value) == ("mrr@10", 2, 0.7)
    assert chosen.epochs_without_gain == 3  # a tie and a NaN are no gain
    assert chosen.patience_exhausted(3) and not chosen.patience_exhausted(4)
    assert not chosen.patience_exhausted(0)  # 0: off
    nothing = select([epoch(1, None), epoch(2, None)])
    assert nothing.best_epoch is None and nothing.metric is None
    assert not nothing.patience_exhausted(1)
    triplets = select([{"epoch": 1, "eval": {"triplet_accuracy": 0.25}}])
    assert (triplets.metric, triplets.best_epoch) == ("triplet_accuracy", 1)


# ------------------------------------------------------------------ the trainer
def test_the_best_validation_epoch_is_exported_not_the_last(reference):
    result, best, folder = reference
    ckpt = folder / "ckpt"
    assert (result.best_epoch, result.exported_epoch, result.selected_by) == (best, best, "mrr@10")
    assert result.eval_source == "validation" and not result.stopped_early
    assert result.eval_after == result.epochs[best - 1].eval
    exported = _weights(folder / "out")
    assert _same(exported, _weights(ckpt / f"epoch-{best:04d}"))
    assert not _same(exported, _weights(ckpt / "epoch-0003")), "the last epoch was exported"


def test_without_checkpoints_the_best_epoch_is_kept_in_memory(tiny, reference, tmp_path):
    _, best, folder = reference
    again = finetune(
        tiny, PAIRS, _config(epochs=3), out_dir=tmp_path / "out", eval_examples=AGAINST
    )
    assert again.exported_epoch == best
    assert _same(_weights(tmp_path / "out"), _weights(folder / "ckpt" / f"epoch-{best:04d}"))


def test_select_best_epoch_off_exports_the_last(tiny, reference, tmp_path):
    """The same run (same seed) with the choice off: the last epoch's weights, bit for bit."""
    _, best, folder = reference
    result = finetune(
        tiny,
        PAIRS,
        _config(epochs=3, select_best_epoch=False),
        out_dir=tmp_path / "out",
        eval_examples=AGAINST,
    )
    assert result.best_epoch == best and result.exported_epoch == 3
    assert result.eval_after == result.epochs[2].eval
    assert _same(_weights(tmp_path / "out"), _weights(folder / "ckpt" / "epoch-0003"))


def test_early_stopping_stops_after_k_epochs_without_gain(tiny, tmp_path):
    ckpt, patience = tmp_path / "ckpt", 2
    finished: list[int] = []
    result = finetune(
        tiny,
        PAIRS,
        _config(epochs=5, early_stopping_patience=patience),
        out_dir=tmp_path / "out",
        checkpoint_dir=ckpt,
        eval_examples=AGAINST,
        on_epoch_end=lambda stats: finished.append(stats.epoch),
    )
    figures = [e.eval["mrr@10"] for e in result.epochs]
    best = _best_of([e.eval for e in result.epochs])
    assert result.stopped_early and not result.stopped and result.output_dir
    assert finished == list(range(1, best + patience + 1)), figures
    assert best + patience < 5, "it stopped before the configured epochs"
    assert all(value <= figures[best - 1] for value in figures[best:]), figures
    assert result.exported_epoch == result.best_epoch == best
    assert _same(_weights(tmp_path / "out"), _weights(ckpt / f"epoch-{best:04d}"))

    # A job redelivered after it stopped early resumes into nothing more to train.
    steps: list[int] = []
    again = finetune(
        tiny,
        PAIRS,
        _config(epochs=5, early_stopping_patience=patience),
        checkpoint_dir=ckpt,
        resume=True,
        eval_examples=AGAINST,
        on_step=lambda n, loss: steps.append(n),
    )
    assert steps == [] and again.stopped_early
    assert (again.best_epoch, again.exported_epoch) == (best, best)
    assert len(again.epochs) == best + patience


def test_a_resume_keeps_the_best_epoch(tiny, reference, tmp_path):
    """The best epoch from before the interruption survives pruning (checkpoints after every
    step would otherwise push it out) and is the one exported after the resume, as in the
    uninterrupted run."""
    uninterrupted, best_uninterrupted, _ = reference
    ckpt = tmp_path / "ckpt"
    first = finetune(
        tiny,
        PAIRS,
        _config(epochs=3),
        checkpoint_dir=ckpt,
        eval_examples=AGAINST,
        stop_after_epoch=2,
        checkpoint_every_steps=1,
    )
    assert first.stopped and first.output_dir is None
    best = _best_of([e.eval for e in first.epochs])
    kept = ckpt / f"epoch-{best:04d}"
    assert kept.is_dir() and not (kept / "optimizer.safetensors").exists(), sorted(
        p.name for p in ckpt.iterdir()
    )
    with pytest.raises(CheckpointMismatch, match="eval_sha256"):
        finetune(
            tiny,
            PAIRS,
            _config(epochs=3),
            checkpoint_dir=ckpt,
            resume=True,
            eval_examples=AGAINST[:-1],
        )
    rest = finetune(
        tiny,
        PAIRS,
        _config(epochs=3),
        out_dir=tmp_path / "out",
        checkpoint_dir=ckpt,
        resume=True,
        eval_examples=AGAINST,
        checkpoint_every_steps=1,
    )
    assert _best_of([e.eval for e in rest.epochs]) == best == best_uninterrupted
    assert (rest.best_epoch, rest.exported_epoch) == (best, best)
    assert rest.eval_after == pytest.approx(uninterrupted.eval_after)
    exported = _weights(tmp_path / "out")
    assert _same(exported, _weights(kept))
    assert not _same(exported, _weights(ckpt / "epoch-0003"))


def test_without_a_validation_set_a_bounded_sample_is_evaluated_and_named(tiny):
    from embedding.evaluation.metrics import evaluate
    from embedding.inference.encoder import Encoder

    sample = eval_sample(PAIRS, 5, seed=0)
    assert len(sample) == 5 and set(sample) <= set(PAIRS) and sample == eval_sample(PAIRS, 5, 0)
    base = Encoder.load(tiny, device="cpu", precision="fp32")
    on_sample, on_all = evaluate(base, sample), evaluate(base, PAIRS)
    assert on_sample != on_all, "the sample must score differently for this test to tell"

    result = finetune(tiny, PAIRS, _config(epochs=1, eval_sample_rows=5))
    assert result.eval_source == result.settings["eval_source"] == "train-sample:5 of 8"
    assert result.eval_before == pytest.approx(on_sample, abs=1e-6)
    assert set(result.eval_after) == set(on_sample)
    assert all(e.eval == {} for e in result.epochs), "no per-epoch eval without validation"
    assert result.best_epoch is None and result.selected_by is None
    assert result.exported_epoch == 1 and not result.stopped_early


def test_early_stopping_without_a_validation_set_is_refused_before_loading():
    with pytest.raises(ValueError, match="early_stopping_patience needs a validation set"):
        finetune("no-such-model-is-ever-loaded", PAIRS, _config(early_stopping_patience=1))


# ------------------------------------------------------------------ the job
@pytest.fixture
def sandbox(tiny, tmp_path, monkeypatch):
    from core.config import get_settings
    from db import migrate

    for key in list(os.environ):
        if key.startswith("EMBEDDING_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EMBEDDING_MODEL_ROOTS", json.dumps([str(Path(tiny).parent)]))
    monkeypatch.setenv("EMBEDDING_JOB_KEEP_CHECKPOINTS", "3")  # every epoch, to compare
    get_settings.cache_clear()
    migrate.upgrade(url)
    yield tmp_path
    get_settings.cache_clear()


def test_a_job_registers_the_best_epoch_and_says_which(tiny, sandbox):
    from api.routes.fine_tuning import job_object
    from db import repo
    from db.models import ModelVersion
    from db.session import session_scope
    from workers.client import job_status
    from workers.jobs import finetune_job

    validation = Path(tiny).parent / "validation.jsonl"
    validation.write_text(
        "".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in AGAINST)
    )
    params = {
        "loss": "mnrl",
        "epochs": 3,
        "lr": 1e-3,
        "batch_size": 4,
        "pairs": [{"anchor": a, "positive": p} for a, p in PAIRS],
        # A file under the roots, as the API's validation_file arrives.
        "validation_dataset": str(validation),
    }
    with session_scope() as session:
        job_id = str(repo.jobs.create_job(session, tiny, params, project_id="proj_default").id)
    reply = finetune_job.run_finetune_job(job_id, hostname="test")
    assert reply["status"] == "succeeded", reply

    status = job_status(job_id)  # what `embedctl jobs show` prints
    stored = [row["eval"] for row in status["epochs"]]
    assert all("mrr@10" in figures for figures in stored), "per-epoch eval is in epoch_metrics"
    best = _best_of(stored)
    assert best != 3, stored
    result = status["result"]
    assert (result["best_epoch"], result["exported_epoch"]) == (best, best)
    assert result["selected_by"] == "mrr@10" and result["eval_source"] == "validation"
    assert result["best_value"] == stored[best - 1]["mrr@10"]
    assert reply["result"] == result
    (event,) = [e for e in status["events"] if e["event"] == "best_epoch"]
    assert event["message"].startswith(f"best epoch {best} of 3 selected by validation mrr@10")

    with session_scope() as session:
        version = session.get(ModelVersion, status["model_version_id"])
        metrics, path = dict(version.metrics), Path(version.path)
        job = repo.jobs.get_job(session, job_id, scope=repo.ALL_PROJECTS)
        api_result = job_object(job, None).result
    assert metrics["best_epoch"] == best and metrics["eval_after"] == stored[best - 1]
    assert api_result is not None and api_result.best_epoch == best
    checkpoints = Path(finetune_job.job_dir(job_id)) / "checkpoints"
    exported = _weights(path)
    assert _same(exported, _weights(checkpoints / f"epoch-{best:04d}"))
    assert not _same(exported, _weights(checkpoints / "epoch-0003")), "the last epoch exported"
    assert json.loads(json.dumps(result)) == result  # plain JSON all the way


def test_the_payload_takes_one_validation_set_and_refuses_patience_without_one(tmp_path):
    from workers.client import job_to_dict
    from workers.schemas import FinetuneRequest, PayloadError, parse

    rows = [{"anchor": a, "positive": p} for a, p in PAIRS]
    base = {"model": "minilm", "loss": "mnrl", "pairs": rows}
    request = parse(
        FinetuneRequest, {**base, "validation_pairs": rows[:2], "early_stopping_patience": 2}
    )
    assert request.validation_rows() == PAIRS[:2]
    assert request.hyperparameters()["early_stopping_patience"] == 2
    with pytest.raises(PayloadError, match="early_stopping_patience needs a validation set"):
        parse(FinetuneRequest, {**base, "early_stopping_patience": 1})
    with pytest.raises(PayloadError, match="at most one of validation_pairs, validation_dataset"):
        parse(
            FinetuneRequest,
            {**base, "validation_pairs": rows, "validation_dataset": str(tmp_path / "v.jsonl")},
        )
    with pytest.raises(PayloadError, match="validation_pairs is empty"):
        parse(FinetuneRequest, {**base, "validation_pairs": []})

    job = SimpleNamespace(  # the columns job_to_dict reads
        id="j",
        project_id="proj_default",
        model="minilm",
        status="queued",
        error=None,
        attempts=0,
        worker=None,
        params={**base, "validation_pairs": rows},
        created_at=None,
        started_at=None,
        finished_at=None,
        sent_at=None,
        model_version_id=None,
        model_version=None,
        result=None,
        epochs=[],
    )
    assert set(job_to_dict(job)["params"]) == {"model", "loss"}, "inline rows stay out"
