"""The trainer: convergence, exact resume, NaN stop, bad data, LoRA, ST-compatible output."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from embedding.data.examples import SEED_TRIPLETS, DataError
from embedding.inference.encoder import Encoder
from embedding.models.specs import spec_from_folder
from embedding.training.config import TrainConfig, TrainingDiverged
from embedding.training.loop import finetune
from embedding.training.setup import make_scheduler
from embedding.validation.benchmark import time_train_step
from embedding.validation.convergence import run_convergence

TRIPLETS = [
    *SEED_TRIPLETS,
    ("def read_file(path)", "def load_text(p)", "CREATE TABLE t"),
    ("for x in items", "for row in rows", "import os"),
    ("SELECT name FROM users", "SELECT email FROM customers", "class Foo"),
]


def test_seed_convergence_check_on_minilm():
    """The seed's criteria: loss falls every epoch, > 20 % overall, < 30 s; and never zero."""
    run = run_convergence("minilm", epochs=3, lr=1e-4)
    losses = run.epoch_losses
    assert len(losses) == 3 and all(b < a for a, b in itertools.pairwise(losses)), losses
    assert (losses[0] - losses[-1]) / losses[0] > 0.20, losses
    assert losses[-1] > 0.0, "a loss of zero would make the check meaningless"
    assert run.seconds < 30.0


def _fp32(**kw) -> TrainConfig:
    return TrainConfig(loss="triplet", lr=5e-5, batch_size=3, precision="fp32", margin=1.0, **kw)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full = finetune("minilm", TRIPLETS, _fp32(epochs=3), checkpoint_dir=tmp_path / "a")
    first = finetune(
        "minilm", TRIPLETS, _fp32(epochs=3), checkpoint_dir=tmp_path / "b", stop_after_epoch=1
    )
    assert first.stopped and len(first.epoch_losses) == 1
    replayed: list[int] = []
    rest = finetune(
        "minilm",
        TRIPLETS,
        _fp32(epochs=3),
        checkpoint_dir=tmp_path / "b",
        resume=True,
        on_epoch_end=lambda s: replayed.append(s.epoch),
    )
    assert replayed == [1, 2, 3]  # epoch 1 replayed from the checkpoint, 2 and 3 trained
    assert len(rest.epoch_losses) == 3
    np.testing.assert_allclose(rest.epoch_losses, full.epoch_losses, rtol=0, atol=1e-6)
    for f in (tmp_path / "b").rglob("*"):
        assert f.is_dir() or f.suffix in (".safetensors", ".json") or f.name == "LATEST", f


class _Crash(Exception):
    """Stands for the process dying mid-epoch (after the last checkpoint it wrote)."""


def test_resumed_inside_an_epoch_equals_uninterrupted(tmp_path):
    """Checkpoints every 2 steps inside an epoch; a run that dies in epoch 2 (after step 3)
    resumes at the batch after its last checkpoint with the uninterrupted run's losses."""
    full = finetune("minilm", TRIPLETS, _fp32(epochs=2), checkpoint_dir=tmp_path / "a")
    steps: list[int] = []
    saved: list[tuple[int, int]] = []

    def crash_in_epoch_2(n_rows: int, loss: float) -> None:
        steps.append(n_rows)
        batches_per_epoch = math.ceil(len(TRIPLETS) / 3)
        if len(steps) == batches_per_epoch + 3:
            raise _Crash

    with pytest.raises(_Crash):
        finetune(
            "minilm",
            TRIPLETS,
            _fp32(epochs=2),
            checkpoint_dir=tmp_path / "b",
            checkpoint_every_steps=2,
            on_step=crash_in_epoch_2,
            on_checkpoint=lambda path, epochs, step: saved.append((epochs, step)),
        )
    assert (1, 2) in saved and (1, 4) not in saved  # epoch 2, after its 2nd batch
    assert (tmp_path / "b" / "LATEST").read_text() == "epoch-0001-step-000002"
    resumed_steps: list[float] = []
    rest = finetune(
        "minilm",
        TRIPLETS,
        _fp32(epochs=2),
        checkpoint_dir=tmp_path / "b",
        resume=True,
        on_step=lambda n, loss: resumed_steps.append(loss),
    )
    batches_per_epoch = math.ceil(len(TRIPLETS) / 3)
    assert len(resumed_steps) == batches_per_epoch - 2  # the exact next batch onwards
    np.testing.assert_allclose(rest.epoch_losses, full.epoch_losses, rtol=0, atol=1e-6)


def test_a_stop_inside_an_epoch_writes_a_checkpoint_at_once(tmp_path):
    """should_stop() mid-epoch (a warm shutdown) keeps the batches done so far."""
    full = finetune("minilm", TRIPLETS, _fp32(epochs=2), checkpoint_dir=tmp_path / "a")
    asked = itertools.count(1)
    batches_per_epoch = math.ceil(len(TRIPLETS) / 3)
    first = finetune(
        "minilm",
        TRIPLETS,
        _fp32(epochs=2),
        checkpoint_dir=tmp_path / "b",
        should_stop=lambda: next(asked) == batches_per_epoch + 2,  # before epoch 2's 2nd batch
    )
    assert first.stopped
    assert (tmp_path / "b" / "LATEST").read_text() == "epoch-0001-step-000001"
    rest = finetune("minilm", TRIPLETS, _fp32(epochs=2), checkpoint_dir=tmp_path / "b", resume=True)
    np.testing.assert_allclose(rest.epoch_losses, full.epoch_losses, rtol=0, atol=1e-6)


def test_checkpoints_are_pruned_when_the_job_ends(tmp_path):
    from embedding.training.checkpoints import prune_after_job

    finetune("minilm", TRIPLETS, _fp32(epochs=3), checkpoint_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("epoch-*"))) == 2
    prune_after_job(tmp_path / "c", keep=1)
    kept = list((tmp_path / "c").glob("epoch-*"))
    assert [k.name for k in kept] == ["epoch-0003"]
    assert not (kept[0] / "optimizer.safetensors").exists()
    assert (kept[0] / "model.safetensors").exists()
    prune_after_job(tmp_path / "c", keep=0)
    assert not (tmp_path / "c").exists()


def _lr_per_step(scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_schedule_per_optimizer_step():
    """Warmup starts at lr/w (never a step at LR 0), peaks, then decays linearly towards 0;
    without warmup it is exactly transformers' linear schedule (see make_scheduler)."""
    from transformers import get_linear_schedule_with_warmup

    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    opt = optimizer()
    got = _lr_per_step(make_scheduler(opt, total_steps=10, warmup_ratio=0.3), opt, 10)
    want = [1 / 3, 2 / 3, 1.0, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    for total in (1, 3, 7):
        opt = optimizer()
        ours = _lr_per_step(make_scheduler(opt, total, warmup_ratio=0.0), opt, total)
        opt = optimizer()
        theirs = _lr_per_step(get_linear_schedule_with_warmup(opt, 0, total), opt, total)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_two_runs_with_one_seed_are_identical():
    a = finetune("minilm", TRIPLETS, _fp32(epochs=2, seed=7))
    b = finetune("minilm", TRIPLETS, _fp32(epochs=2, seed=7))
    assert a.epoch_losses == b.epoch_losses


def test_nan_loss_stops_with_epoch_and_step():
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+"):
        finetune(
            "minilm",
            TRIPLETS,
            TrainConfig(lr=1e30, batch_size=2, margin=1.0, epochs=2, warmup_ratio=0),
        )


@pytest.mark.parametrize(
    ("rows", "config", "message"),
    [
        ([], TrainConfig(), "empty"),
        ([("a", "b", "")], TrainConfig(), "negative is empty"),
        ([("a", 3, "c")], TrainConfig(), "positive is int"),
        ([("a",)], TrainConfig(), "expected 2 or 3 texts"),
        ([("a", "b", "c"), ("a", "b")], TrainConfig(), "mixes pairs and triplets"),
        ([("a", "b", "c", "d"), ("a", "b", "c")], TrainConfig(), "mixes triplets and 2-negative"),
        ([("a", "b", "c", "")], TrainConfig(), "negative 2 is empty"),
        ([("a", "b", "c", "d")], TrainConfig(loss="triplet"), "rows are 2-negative n-tuples"),
        ([("a", "b", "c")], TrainConfig(epochs=0), "epochs must be a positive integer"),
        ([("a", "b", "c")], TrainConfig(lr=0.0), "lr must be"),
        ([("a", "b", "c")], TrainConfig(lr=float("nan")), "lr must be"),
        ([("a", "b", "c")], TrainConfig(batch_size=0), "batch_size"),
    ],
)
def test_bad_data_is_refused_before_training(rows, config, message):
    with pytest.raises((DataError, ValueError), match=message):
        finetune("no-such-model-is-ever-loaded", rows, config)


def test_pairs_with_triplet_loss_are_refused():
    with pytest.raises(DataError, match="needs triplets"):
        finetune("minilm", [("a", "b"), ("c", "d")], TrainConfig(loss="triplet"))


def test_output_opens_in_sentence_transformers_and_our_registry(tmp_path):
    from sentence_transformers import SentenceTransformer

    result = finetune(
        "minilm",
        [(a, p) for a, p, _ in TRIPLETS],
        TrainConfig(loss="mnrl", epochs=1, lr=5e-5, batch_size=4),
        out_dir=tmp_path / "out",
    )
    path = result.output_dir
    texts = ["def f(): return 1", "SELECT 1", "class A: pass"]
    theirs = SentenceTransformer(path, device="cpu").encode(texts, normalize_embeddings=True)
    ours = Encoder.load(path, device="cpu", precision="fp32").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    base = Encoder.load("minilm", device="cpu", precision="fp32").encode(texts)
    assert not np.allclose(base, ours, atol=1e-4), "the output must be the trained weights"
    spec = spec_from_folder(path)
    assert (spec.pooling, spec.dim) == ("mean", 384)
    assert (
        json.loads((tmp_path / "out" / "embedding_spec.json").read_text())["base_model"] == "minilm"
    )


def test_lora_trains_only_adapters_on_tiny_qwen2(tiny_qwen2_dir, tmp_path):
    before = Encoder.load(str(tiny_qwen2_dir), device="cpu", precision="fp32")
    base = {n: p.detach().clone() for n, p in before.model.named_parameters()}
    trained: dict = {}

    def grab(stats):
        trained["done"] = stats.epoch

    from embedding.training import loop

    captured = {}
    original = loop.export_model

    def spy(encoder, out_dir, merged):  # see the trained model just before the merge
        captured["params"] = {
            n: (p.detach().clone(), p.requires_grad) for n, p in encoder.model.named_parameters()
        }
        return original(encoder, out_dir, merged)

    loop.export_model = spy
    try:
        result = finetune(
            str(tiny_qwen2_dir),
            TRIPLETS,
            TrainConfig(
                epochs=2, lr=1e-2, batch_size=4, lora=True, lora_r=4, precision="fp32", margin=1.0
            ),
            out_dir=tmp_path / "lora-out",
            on_epoch_end=grab,
        )
    finally:
        loop.export_model = original
    assert result.settings["lora"] and trained["done"] == 2
    params = captured["params"]
    trainable = [n for n, (_, grad) in params.items() if grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, (tensor, _) in params.items():
        if "lora_" in name:
            continue
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(tensor, base[clean]), f"base weight {name} changed"
    assert any(not torch.all(t == 0) for n, (t, _) in params.items() if "lora_B" in n), (
        "adapters did not learn"
    )
    merged = Encoder.load(result.output_dir, device="cpu", precision="fp32")
    assert merged.spec.pooling == "last_token"
    vectors = merged.encode(["def hello_world(): return 42"])
    assert math.isclose(float(np.linalg.norm(vectors)), 1.0, abs_tol=1e-5)


def test_train_step_timing_is_real():
    figures = time_train_step("minilm", repeats=3)
    assert figures["grad_norm"] > 0 and figures["forward_backward_ms"] > 0
    assert figures["batch"] == 5


def test_resume_with_other_settings_or_data_is_refused(tmp_path):
    """A checkpoint directory belongs to one run: resuming it with other data would mix two."""
    from embedding.training.config import CheckpointMismatch

    ckpt = tmp_path / "ckpt"
    finetune("minilm", TRIPLETS, _fp32(epochs=2), checkpoint_dir=ckpt, stop_after_epoch=1)
    faster = TrainConfig(loss="triplet", lr=1e-3, batch_size=3, precision="fp32", margin=1.0)
    with pytest.raises(CheckpointMismatch, match=r"config\.lr"):
        finetune("minilm", TRIPLETS, faster, checkpoint_dir=ckpt, resume=True)
    with pytest.raises(CheckpointMismatch, match="data_sha256"):
        finetune("minilm", TRIPLETS[:-1], _fp32(epochs=2), checkpoint_dir=ckpt, resume=True)


def test_a_fresh_run_clears_old_checkpoints(tmp_path):
    """Without resume, stale epochs of an earlier run must not be picked up later."""
    ckpt = tmp_path / "ckpt"
    finetune("minilm", TRIPLETS, _fp32(epochs=2), checkpoint_dir=ckpt)
    assert sorted(p.name for p in ckpt.glob("epoch-*")) == ["epoch-0001", "epoch-0002"]
    finetune("minilm", TRIPLETS, _fp32(epochs=1), checkpoint_dir=ckpt)
    assert sorted(p.name for p in ckpt.glob("epoch-*")) == ["epoch-0001"]


def test_epoch_batches_never_leave_a_lone_row():
    from embedding.training.steps import epoch_batches

    batches = epoch_batches(7, 3, seed=0, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [len(b) for b in batches] == [3, 4], "a batch of one has no in-batch negatives"
    assert epoch_batches(7, 3, seed=0, epoch=1) == batches
    assert epoch_batches(7, 3, seed=0, epoch=2) != batches


def test_saved_model_and_checkpoints_follow_the_umask(tmp_path):
    """Group-readable under umask 027: another process user of the volume can load it."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        finetune(
            "minilm",
            TRIPLETS[:4],
            TrainConfig(epochs=1, batch_size=4),
            out_dir=tmp_path / "out",
            checkpoint_dir=tmp_path / "ckpt",
        )
    finally:
        os.umask(old)
    paths = [p for p in (tmp_path / "out").rglob("*")] + list((tmp_path / "ckpt").rglob("*"))
    assert any(p.suffix == ".safetensors" for p in paths)
    for path in [tmp_path / "out", *paths]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))
