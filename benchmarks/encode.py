"""Encoding throughput and latency: ours against sentence-transformers, side by side.

One process, one deterministic corpus (1,000 code snippets: one-liners and 20-60 line
functions), the two encoders alternating round by round so that machine noise hits both.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encode.py [--rounds 3] [--n 1000]

Prints texts/s, tokens/s, ratios to ST (fp32 default, and ST under the same bf16 autocast),
minimum cosine to fp32, single-text latency, and the achieved fraction of a matmul peak
measured in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's
# queue (torch imports it): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from embedding.data.corpus import code_corpus
from embedding.inference.encoder import Encoder
from embedding.inference.precision import bf16_speedup


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 0.5) -> float:
    """The best rate of single n x n products over about ``seconds``: the yardstick of the
    share-of-peak figures.

    ``n`` halves (to no less than 256) while one product would take more than a tenth of
    ``seconds``: on an AMD EPYC without AVX-512 a bf16 product runs at about 1 GFLOP/s (a
    2048^3 one in 17 s), where fixed sizes made this one measurement take minutes."""
    probe = torch.randn(256, 256, dtype=dtype)
    probe @ probe
    start = time.perf_counter()
    probe @ probe
    rate = 2 * 256**3 / max(time.perf_counter() - start, 1e-9)
    while n > 256 and 2 * n**3 / rate > seconds / 10:
        n //= 2
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        a @ b
        now = time.perf_counter()
        best = max(best, 2 * n**3 / max(now - start, 1e-9))
        if now >= deadline:
            return best / 1e9


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=50)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    texts = code_corpus(args.n)
    ours = Encoder.load("minilm", device="cpu")  # the project's default precision
    ours32 = Encoder.load("minilm", device="cpu", precision="fp32")
    # bf16 asked for explicitly: the default is bf16 only where it is faster (precision.py).
    ours16 = Encoder.load("minilm", device="cpu", precision="bf16")
    st = SentenceTransformer(ours.load_reports[0].path, device="cpu")
    sequences, report = ours.prepare(texts)
    tokens = sum(len(s) for s in sequences)

    def st_fp32():
        return st.encode(texts, batch_size=32, normalize_embeddings=True)

    def st_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return st.encode(texts, batch_size=32, normalize_embeddings=True)

    base = f"ours default ({ours.precision})"
    runs = {
        base: lambda: ours.encode(texts),
        "ours fp32": lambda: ours32.encode(texts),
        f"ours {ours16.precision} asked": lambda: ours16.encode(texts),
        "ST fp32 (default)": st_fp32,
        "ST bf16 autocast": st_bf16,
    }
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            took, out = timed(fn)
            seconds[name].append(took)
            outputs[name] = np.asarray(out)

    reference = outputs["ST fp32 (default)"]
    print(
        f"corpus: {len(texts)} texts, {tokens} tokens after truncation to 256 "
        f"({sum(r.truncated for r in report)} truncated); torch threads {torch.get_num_threads()}"
    )
    print(f"bf16 matrix products at {bf16_speedup('cpu'):.2f}x fp32's speed (precision.py)")
    print(f"{'encoder':<24}{'texts/s':>10}{'tokens/s':>11}{'min cos vs fp32':>17}")
    best = {name: min(vals) for name, vals in seconds.items()}
    for name, took in best.items():
        cos = float((outputs[name] * reference).sum(axis=1).min())
        print(f"{name:<24}{len(texts) / took:>10.1f}{tokens / took:>11.0f}{cos:>17.6f}")
    print(f"ratio ours/ST fp32 default : {best['ST fp32 (default)'] / best[base]:.2f}x")
    same = f"ours {ours16.precision} asked"
    print(f"ratio ours/ST same bf16    : {best['ST bf16 autocast'] / best[same]:.2f}x ({same})")
    print(f"ratio ours fp32/ST fp32    : {best['ST fp32 (default)'] / best['ours fp32']:.2f}x")

    # Single-text latency, alternating.
    one = "def calculate_sum(items): return sum(items)"
    lat = {"ours": [], "ST fp32": [], "ST bf16": []}
    ours.encode(one)
    st.encode([one])
    for _ in range(args.latency_repeats):
        lat["ours"].append(timed(lambda: ours.encode(one))[0] * 1000)
        lat["ST fp32"].append(timed(lambda: st.encode([one]))[0] * 1000)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lat["ST bf16"].append(timed(lambda: st.encode([one]))[0] * 1000)
    for name, vals in lat.items():
        print(
            f"single-text latency {name:<8} p50 {statistics.median(vals):6.2f} ms  "
            f"min {min(vals):6.2f} ms"
        )

    # Achieved fraction of a matmul peak: linear-layer FLOPs of the forward pass.
    params = sum(p.numel() for n, p in ours.model.named_parameters() if "embeddings" not in n)
    flops = 2 * params * tokens
    peak = matmul_peak_gflops(torch.bfloat16 if ours.precision == "bf16" else torch.float32)
    achieved = flops / best[base] / 1e9
    print(
        f"matmul peak ({ours.precision}) {peak:.0f} GFLOP/s; encoder achieves "
        f"{achieved:.0f} GFLOP/s on its linear layers = {achieved / peak:.1%} of peak"
    )


if __name__ == "__main__":
    main()
