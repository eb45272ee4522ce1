"""Data-parallel fine-tuning (embedding/training/distributed.py): two gloo processes train
what one process trains at the same global batch and seed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from embedding.training.config import TrainConfig
from embedding.training.distributed import finetune_distributed
from embedding.training.loop import finetune
from embedding.training.rank_group import RankGroup
from tests.support import ROOT

# 13 pairs at batch 5: batches of 5, 5 and 3 rows, so the two ranks' shards are uneven.
PAIRS = [
    (
        f"return the sum of x and {i} ({['list', 'dict', 'set'][i % 3]})",
        f"def add_{i}(x):\n    return x + {i}",
    )
    for i in range(13)
]
COSINE_TOLERANCE = 1e-4


def test_ranks_split_each_batch_without_overlap():
    for world in (1, 2, 3, 4):
        for n in range(0, 11):
            shards = [RankGroup(r, world, "cpu").shard(n) for r in range(world)]
            rows = [i for shard in shards for i in shard]
            assert rows == list(range(n)), (world, n)  # all rows, once, in order
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _config(**kw) -> TrainConfig:
    base = dict(
        loss="mnrl", epochs=2, lr=5e-5, batch_size=5, precision="fp32", seed=11, warmup_ratio=0.0
    )
    return TrainConfig(**{**base, **kw})


def _cosines(a: str, b: str) -> np.ndarray:
    from embedding.inference.encoder import Encoder

    texts = [t for pair in PAIRS[:6] for t in pair]
    va = Encoder.load(a, device="cpu", precision="fp32").encode(texts)
    vb = Encoder.load(b, device="cpu", precision="fp32").encode(texts)
    va = va / np.linalg.norm(va, axis=1, keepdims=True)
    vb = vb / np.linalg.norm(vb, axis=1, keepdims=True)
    return (va * vb).sum(axis=1)


@pytest.mark.slow
def test_two_gloo_ranks_through_the_cli_equal_one_process_without_dropout(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in PAIRS))
    report = tmp_path / "two.json"
    options = "--loss mnrl --epochs 2 --lr 5e-5 --batch-size 5 --seed 11 --devices 2 --no-dropout"
    where = ["--data", str(data), "--out", str(tmp_path / "two"), "--json", str(report)]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "finetune",
            "--model",
            "minilm",
            *where,
            *options.split(),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    two = json.loads(report.read_text())
    assert two["world_size"] == 2 and len(two["epoch_losses"]) == 2
    # One process, this one, with the settings the CLI trained with (its recipe's defaults).
    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in two["settings"].items() if k in fields})
    assert config.dropout is False and config.batch_size == 5
    one = finetune("minilm", PAIRS, config, out_dir=tmp_path / "one")
    assert one.settings["world_size"] == 1
    np.testing.assert_allclose(two["epoch_losses"], one.epoch_losses, atol=1e-4, rtol=0)
    assert one.epoch_losses[0] > one.epoch_losses[-1]  # it trained
    cosines = _cosines(one.output_dir, two["model"])
    assert cosines.min() > 1 - COSINE_TOLERANCE, cosines


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cached_mnrl", "triplet"])
def test_two_ranks_equal_one_process_for_cached_mnrl_and_triplets(loss, tmp_path):
    rows = (
        PAIRS
        if loss == "cached_mnrl"
        else [(a, p, PAIRS[(i + 1) % 13][1]) for i, (a, p) in enumerate(PAIRS)]
    )
    config = _config(loss=loss, dropout=False, mini_batch_size=3, epochs=1)
    one = finetune("minilm", rows, config)
    two = finetune_distributed("minilm", rows, config, devices=["cpu", "cpu"])
    assert two.settings["world_size"] == 2
    np.testing.assert_allclose(two.epoch_losses, one.epoch_losses, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_lora_on_two_ranks_equals_one_process(tiny_qwen2_dir, tmp_path):
    config = _config(dropout=False, lora=True, lr=1e-3, epochs=2)
    one = finetune(tiny_qwen2_dir, PAIRS, config, out_dir=tmp_path / "one")
    two = finetune_distributed(
        tiny_qwen2_dir, PAIRS, config, devices=["cpu", "cpu"], out_dir=tmp_path / "two"
    )
    np.testing.assert_allclose(two.epoch_losses, one.epoch_losses, atol=1e-4, rtol=0)
    assert one.epoch_losses[0] != one.epoch_losses[1]  # it trained


@pytest.mark.slow
def test_with_dropout_two_ranks_stay_within_dropouts_own_noise(tmp_path):
    """Dropout draws other masks in two ranks, so the losses differ by its noise only: an
    epoch of 96 code-search pairs at batch 16, at an lr that barely moves the weights.

    On minilm at this size dropout alone moves one process's epoch loss by more than the
    issue's 2 %: the same run with only the dropout RNG reseeded gave 0.2966, 0.2800 and
    0.3159 (±6 %), and two ranks gave 0.3150. So the bound here is that noise (10 %); the 2 %
    is held by the next test, on an epoch long enough to average dropout out.
    """
    from embedding.data.corpus import code_corpus

    code = code_corpus(96, seed=5)
    rows = [(f"{snippet.splitlines()[0][:60]} (what it does)", snippet) for snippet in code]
    config = _config(lr=1e-6, epochs=1, batch_size=16)
    one = finetune("minilm", rows, config)
    seen = []
    two = finetune_distributed(
        "minilm", rows, config, devices=["cpu", "cpu"], on_epoch_end=seen.append
    )
    assert [s.epoch for s in seen] == [1]  # rank 0's epochs, called back here
    for a, b in zip(one.epoch_losses, two.epoch_losses, strict=True):
        assert abs(a - b) <= 0.10 * abs(a), (one.epoch_losses, two.epoch_losses)


@pytest.mark.slow
def test_with_dropout_two_ranks_are_within_two_percent_of_one_process(tmp_path):
    """The issue's bound, 2 %, with dropout on (the default): an epoch long enough to average
    dropout's noise out (1,024 pairs, batches of 32) on a small BERT, fast on a CPU. The bound
    still tells the group's one real mistake from noise: ranks that scored each half batch
    against its own 16 rows only (no gather) would train a batch-16 loss, which the test
    shows lies well outside 2 % of the batch-32 one."""
    from tests.tiny_models import build_tiny_bert

    model = str(build_tiny_bert(tmp_path / "tiny", hidden=64, seed=3))
    rows = [
        (
            f"return the {i}th item of the list, or {i % 7} (case {i % 11})",
            f"def f_{i}(xs):\n    return xs[{i}] if len(xs) > {i} else {i % 7}",
        )
        for i in range(1024)
    ]
    config = _config(lr=1e-5, epochs=1, batch_size=32)
    one = finetune(model, rows, config)
    two = finetune_distributed(model, rows, config, devices=["cpu", "cpu"])
    local_only = finetune(model, rows, _config(lr=1e-5, epochs=1, batch_size=16))
    (a,), (b,), (c,) = one.epoch_losses, two.epoch_losses, local_only.epoch_losses
    print(f"one process {a:.4f}, two ranks {b:.4f}, batch-16 (no gather) {c:.4f}")
    assert abs(a - b) <= 0.02 * abs(a), (a, b)
    assert abs(a - c) > 0.02 * abs(a), "the bound must tell a batch-16 loss apart"
