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

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from embedding.epoch_selection import select
from embedding.training import CheckpointMismatch, TrainConfig, eval_sample, finetune
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
    from embedding.encoder import Encoder
    from embedding.evaluation import evaluate

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
