"""The GPU path, as far as a CPU can prove it (the figures are in benchmarks/RESULTS.md).

Precision per device is a pure function of the device's capabilities; pass shapes and
budgets per device are data; passes with rounded widths, right padding and mask-free causal
passes must give the same vectors as plain ones; bf16 training of a Qwen2 must not go NaN;
cuDNN attention is off wherever a model is loaded on CUDA.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from embedding.inference.attention_kernels import configure_attention, cudnn_attention_wanted
from embedding.inference.device_profile import (
    CPU_PROFILE,
    CUDA_PROFILE,
    MIN_SCALED_TRAINING_BUDGET,
    pass_profile,
)
from embedding.inference.encoder import Encoder
from embedding.inference.precision import DeviceCaps, choose_precision
from embedding.models.specs import spec_from_folder
from embedding.training.config import TrainConfig
from embedding.training.loop import finetune
from tests.tiny_models import MINILM_DIR

H200 = DeviceCaps(kind="cuda", bf16=True, bf16_speedup=math.inf)
OLD_GPU = DeviceCaps(kind="cuda", bf16=False, bf16_speedup=0.0)
SLOW_BF16_CPU = DeviceCaps(kind="cpu", bf16=True, bf16_speedup=0.6)
FAST_BF16_CPU = DeviceCaps(kind="cpu", bf16=True, bf16_speedup=1.75)
TEXTS = [
    "def add(a, b):\n    return a + b",
    "x",
    "SELECT name FROM users WHERE id = 1 ORDER BY name DESC LIMIT 10",
    "",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n" * 3,
]


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("folder_default", ["fp32", "bf16"])
def test_on_a_gpu_with_bf16_every_model_defaults_to_bf16(folder_default):
    """A folder, a hub id or an export (default fp32) runs bf16 on CUDA, like a built-in."""
    assert choose_precision(None, folder_default, True, H200) == "bf16"


def test_on_a_gpu_a_spec_that_forbids_bf16_and_a_callers_choice_win():
    assert choose_precision(None, "bf16", False, H200) == "fp32"
    assert choose_precision("fp32", "bf16", True, H200) == "fp32"
    assert choose_precision("fp16", "fp32", True, H200) == "fp16"
    assert choose_precision("bf16", "fp32", False, H200) == "fp32"


def test_a_gpu_without_bf16_runs_fp32_or_the_specs_fp16():
    assert choose_precision(None, "bf16", True, OLD_GPU) == "fp32"
    assert choose_precision(None, "fp16", True, OLD_GPU) == "fp16"
    assert choose_precision("bf16", "bf16", True, OLD_GPU) == "fp32"


def test_the_cpu_rule_stays_as_measured():
    assert choose_precision(None, "bf16", True, FAST_BF16_CPU) == "bf16"
    assert choose_precision(None, "bf16", True, SLOW_BF16_CPU) == "fp32"
    assert choose_precision(None, "fp32", True, FAST_BF16_CPU) == "fp32"  # folders stay fp32
    assert choose_precision("bf16", "fp32", True, SLOW_BF16_CPU) == "bf16"  # asked: honoured


def test_a_fine_tuned_export_keeps_its_bases_precision_policy(tmp_path):
    """The export writes the base's policy; a folder read back carries it to the GPU rule."""
    base = replace(spec_from_folder(MINILM_DIR), bf16_allowed=False)
    pairs = [("add two numbers", "def add(a, b): return a + b"), ("reverse", "s[::-1]")] * 2
    out = tmp_path / "export"
    finetune(base, pairs, TrainConfig(loss="mnrl", epochs=1, batch_size=2), out_dir=out)
    written = json.loads((out / "embedding_spec.json").read_text())
    assert written["bf16_allowed"] is False
    spec = spec_from_folder(out)
    assert spec.bf16_allowed is False
    assert choose_precision(None, spec.default_precision, spec.bf16_allowed, H200) == "fp32"


# ---------------------------------------------------------- profiles, kernels
def test_budgets_are_per_device_and_the_cpus_stay():
    assert pass_profile("cpu") == CPU_PROFILE
    assert (CPU_PROFILE.encode_token_budget, CPU_PROFILE.training_token_budget) == (4096, 1024)
    assert pass_profile("cuda:1") == CUDA_PROFILE == pass_profile("cuda", 384, 6)
    assert CUDA_PROFILE.encode_token_budget > CPU_PROFILE.encode_token_budget
    assert CUDA_PROFILE.training_token_budget > CPU_PROFILE.training_token_budget
    assert pass_profile("cpu", 1536, 28) == CPU_PROFILE  # CPU figures never scale


def test_a_large_models_training_chunks_shrink_on_a_gpu_but_not_below_the_floor():
    qodo = pass_profile("cuda", 1536, 28)
    assert qodo.training_token_budget == MIN_SCALED_TRAINING_BUDGET
    assert qodo.encode_token_budget == CUDA_PROFILE.encode_token_budget
    mid = pass_profile("cuda", 768, 6)  # half minilm's per-token memory ratio
    assert mid.training_token_budget == max(
        MIN_SCALED_TRAINING_BUDGET, CUDA_PROFILE.training_token_budget // 2
    )


def test_cuda_turns_cudnn_attention_off_and_a_cpu_leaves_it():
    """cuDNN attention plans per shape and NaNs in backward (pytorch#196678)."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        configure_attention("cpu")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        configure_attention("cuda:0")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert not cudnn_attention_wanted("cuda") and cudnn_attention_wanted("cpu")
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


# ----------------------------------------------------------- shapes that repeat
@pytest.fixture(scope="module")
def minilm32():
    return Encoder.load("minilm", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def qwen32(tiny_qwen2_dir):
    return Encoder.load(str(tiny_qwen2_dir), device="cpu", precision="fp32")


@pytest.mark.parametrize("name", ["minilm32", "qwen32"])
def test_passes_rounded_to_a_width_multiple_equal_plain_ones(request, name):
    encoder = request.getfixturevalue(name)
    plain = encoder.encode(TEXTS, token_budget=64)
    rounded = copy_with_profile(encoder, pad_multiple=64).encode(TEXTS, token_budget=64)
    np.testing.assert_allclose(rounded, plain, atol=1e-5)


def test_collate_pads_right_whatever_the_tokenizer_says(qwen32):
    assert qwen32.tokenizer.padding_side == "left"  # as Qodo-Embed-1 ships its tokenizer
    features = qwen32.collate([[5, 6, 7], [8]])
    assert features["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert features["padded"] is True
    assert qwen32.collate([[5, 6], [7, 8]])["padded"] is False


def test_a_causal_model_runs_padded_passes_without_a_mask_and_gets_the_same_vectors(qwen32):
    """Right padding + causal attention: no real token sees the padding, so no mask."""
    assert qwen32.causal
    without_mask = qwen32.encode(TEXTS)
    masked = copy_with_profile(qwen32)
    masked.causal = False  # forces the mask onto every padded pass
    np.testing.assert_allclose(without_mask, masked.encode(TEXTS), atol=1e-5)
    alone = np.concatenate([qwen32.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(without_mask, alone, atol=1e-5)


def test_bert_is_not_causal(minilm32):
    assert not minilm32.causal


# ---------------------------------------------------------------- bf16 training
@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_bf16_training_of_a_left_padding_qwen2_stays_finite(tiny_qwen2_dir, tmp_path, lora):
    """One epoch of MNRL in bf16 on a Qwen2 whose tokenizer pads left, over texts of many
    lengths (every pass padded): finite losses and an export that encodes to finite vectors.
    """
    from embedding.data.codesearch import build_pairs, stdlib_root
    from embedding.inference.precision import bf16_supported

    if not bf16_supported("cpu"):  # bf16 asked for runs fp32 here (AMD EPYC without AVX-512)
        pytest.skip("this CPU runs no bf16: the training would run fp32")
    train, _, _ = build_pairs(stdlib_root())
    folder = tmp_path / "qwen"
    shutil.copytree(tiny_qwen2_dir, folder)
    config = TrainConfig(loss="mnrl", epochs=1, batch_size=16, lr=2e-4, precision="bf16", lora=lora)
    result = finetune(str(folder), train[:96], config, out_dir=tmp_path / "out")
    assert result.settings["precision"] == "bf16"
    assert all(math.isfinite(x) for x in result.epoch_losses)
    vectors = Encoder.load(str(tmp_path / "out"), device="cpu").encode(TEXTS)
    assert np.isfinite(vectors).all()


def copy_with_profile(encoder: Encoder, **changes) -> Encoder:
    """A shallow copy of ``encoder`` with its pass profile changed (the same model)."""
    import copy

    view = copy.copy(encoder)
    view.profile = replace(encoder.profile, **changes)
    return view


# ------------------------------------------------------------- compiled blocks
def test_the_repeated_blocks_are_found_by_structure(minilm32, qwen32):
    from embedding.inference.compiled_blocks import repeated_blocks

    assert [type(b).__name__ for b in repeated_blocks(minilm32.model)] == ["BertLayer"] * 6
    layers = qwen32.model.config.num_hidden_layers
    assert [type(b).__name__ for b in repeated_blocks(qwen32.model)] == [
        "Qwen2DecoderLayer"
    ] * layers


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_vectors_with_one_graph_for_every_shape(tiny_qwen2_dir):
    """EMBEDDING_COMPILE_BLOCKS: the inference twin's blocks compiled with dynamic shapes.
    Passes of many (rows, width) give eager's vectors, and the compiled graphs do not grow
    with the number of shapes (a graph per shape would compile on every new pass)."""
    from torch._dynamo.utils import counters

    from embedding.inference.compiled_blocks import is_compiled

    eager = Encoder.load(str(tiny_qwen2_dir), device="cpu", precision="bf16")
    if eager.precision != "bf16":
        pytest.skip("this CPU runs no bf16: no low-precision twin to compile")
    compiled = Encoder.load(
        str(tiny_qwen2_dir), device="cpu", precision="bf16", compile_inference=True
    )
    texts = [f"def f_{i}(x):\n    return x * {i}" + " + x" * (i % 13) for i in range(40)]
    compiled.encode(texts[:3])  # the first compile (one graph per mask/no-mask variant)
    graphs = counters["stats"]["unique_graphs"]
    shapes = set()
    for budget in (64, 96, 160, 256, 512):
        for part in (texts[:7], texts[5:29], texts):
            want = eager.encode(part, token_budget=budget)
            got = compiled.encode(part, token_budget=budget)
            assert float((want * got).sum(axis=1).min()) > 0.999
            shapes.add((budget, len(part)))
    one = compiled.encode(["x"])
    assert float(one[0] @ eager.encode(["x"])[0]) > 0.999
    assert counters["stats"]["unique_graphs"] - graphs <= 2, dict(counters["stats"])
    assert is_compiled(compiled._twin) and not is_compiled(compiled.model)
    assert not is_compiled(eager._twin)


@pytest.mark.slow
def test_in_fp32_the_model_itself_is_compiled_and_gives_the_same_vectors(tiny_qwen2_dir, qwen32):
    """No twin in fp32 (a CPU without fast bf16, a spec pinned to fp32): the blocks that
    inference runs are the model's own."""
    from embedding.inference.compiled_blocks import is_compiled

    compiled = Encoder.load(
        str(tiny_qwen2_dir), device="cpu", precision="fp32", compile_inference=True
    )
    assert compiled._twin is None and is_compiled(compiled.model)
    np.testing.assert_allclose(compiled.encode(TEXTS), qwen32.encode(TEXTS), atol=1e-4)


@pytest.mark.slow
def test_a_machine_that_cannot_compile_refuses_the_model_at_load_with_the_reason(tmp_path):
    """With EMBEDDING_COMPILE_BLOCKS on and no working C++ compiler, loading fails at once
    and says what to unset; no request is left to meet inductor's error."""
    import os
    import subprocess
    import sys

    from embedding.inference.precision import bf16_supported
    from tests.support import ROOT

    if not bf16_supported("cpu"):
        pytest.skip("this CPU runs no bf16: no low-precision twin to compile")
    script = (
        "from embedding.inference.encoder import Encoder\n"
        "Encoder.load('minilm', device='cpu', precision='bf16', compile_inference=True)\n"
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-g++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),  # nothing cached to reuse
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0, done.stderr[-2000:]
    assert "EMBEDDING_COMPILE_BLOCKS: compiling 'minilm''s blocks failed on cpu" in done.stderr
    assert "unset it to run eager" in done.stderr
