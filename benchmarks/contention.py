"""One-text embedding latency beside a running fine-tune: two torch pools on one machine.

An ``embedctl worker`` runs its gpu pool (training) and its embed pool (serving) as
processes side by side. Before issue 25 each ran torch on every core; now each runs on its
share (``embedding.inference.torch_threads``). This starts a real fine-tune of minilm in a process of
its own (the gpu pool), and in this process (the embed pool) times ``encode`` of one short
text, first with no fine-tune running (quiet), then beside it; both ways:

* ``shared``: torch's defaults, every pool on every core (before);
* ``split``: the pools' default counts from ``embedding.inference.torch_threads`` (after).

The rounds interleave the two ways, and the best round of each is reported (another
engineer's jobs may share the cores: the best round is the least disturbed).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/contention.py [--rounds 3] [--texts 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's.
sys.path[0] = str(ROOT)

POOLS = ("gpu", "cpu", "embed")
TEXT = "def read_config(path): return json.load(open(path))"


def threads_for(mode: str, pool: str) -> tuple[int, int] | None:
    """The (intra, inter) counts a pool runs with in ``mode``; None: torch's defaults."""
    if mode == "shared":
        return None
    from embedding.inference.torch_threads import pool_threads

    return pool_threads(pool, POOLS)


def trainer(mode: str) -> None:
    """The gpu pool: fine-tune minilm on triplets until killed; prints "training" once."""
    from embedding.inference import torch_threads

    counts = threads_for(mode, "gpu")
    if counts:
        torch_threads.apply(*counts)
    from embedding.data.corpus import code_corpus
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    texts = code_corpus(64)
    rows = [(texts[i], texts[(i + 1) % 64], texts[(i + 7) % 64]) for i in range(64)]
    said = []

    def on_step(n: int, loss: float) -> None:
        if not said:
            print("training", flush=True)
            said.append(1)

    finetune(
        "minilm", rows, TrainConfig(loss="triplet", epochs=1000, batch_size=16), on_step=on_step
    )


def latencies(encoder, n: int) -> list[float]:
    """Milliseconds of ``encode([TEXT])``, ``n`` times after two warm-ups."""
    for _ in range(2):
        encoder.encode([TEXT])
    out = []
    for _ in range(n):
        start = time.perf_counter()
        encoder.encode([TEXT])
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(mode: str, n: int) -> dict[str, float]:
    """The embed pool's latencies, quiet and beside a fine-tune, in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--role", "embed", "--mode", mode, "--texts", str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def embed_side(mode: str, n: int) -> dict[str, float]:
    from embedding.inference import torch_threads

    counts = threads_for(mode, "embed")
    if counts:
        torch_threads.apply(*counts)
    from embedding.inference.encoder import Encoder

    encoder = Encoder.load("minilm", device="cpu")
    quiet = latencies(encoder, n)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--role", "trainer", "--mode", mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "training":
            raise RuntimeError("the fine-tune did not start")
        time.sleep(1.0)  # a few steps in: the trainer is in its steady state
        busy = latencies(encoder, n)
    finally:
        proc.kill()
        proc.wait(30)
    return {
        "quiet_p50": statistics.median(quiet),
        "busy_p50": statistics.median(busy),
        "busy_p90": statistics.quantiles(busy, n=10)[-1],
        "intra_op": torch_threads.current()["intra_op"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--role", choices=("bench", "trainer", "embed"), default="bench")
    parser.add_argument("--mode", choices=("shared", "split"), default="split")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.role == "trainer":
        trainer(args.mode)
        return
    if args.role == "embed":
        print(json.dumps(embed_side(args.mode, args.texts)))
        return
    runs: dict[str, list[dict[str, float]]] = {"shared": [], "split": []}
    for _ in range(args.rounds):
        for mode in ("shared", "split"):  # interleaved
            runs[mode].append(measure(mode, args.texts))
            r = runs[mode][-1]
            print(
                f"{mode:>6}: quiet p50 {r['quiet_p50']:.1f} ms, beside a fine-tune p50 "
                f"{r['busy_p50']:.1f} ms p90 {r['busy_p90']:.1f} ms (embed intra-op "
                f"{r['intra_op']:.0f})",
                flush=True,
            )
    print(f"\nbest of {args.rounds} rounds, {os.cpu_count()} cores:")
    alone = min(r["quiet_p50"] for rs in runs.values() for r in rs)
    for mode, rs in runs.items():
        best = min(rs, key=lambda r: r["busy_p50"])
        quiet = min(r["quiet_p50"] for r in rs)
        print(
            f"{mode:>6}: quiet {quiet:.1f} ms, beside a fine-tune {best['busy_p50']:.1f} ms "
            f"(p90 {best['busy_p90']:.1f}); ratio to its quiet: {best['busy_p50'] / quiet:.2f}x, "
            f"to the quietest ({alone:.1f} ms, every core): {best['busy_p50'] / alone:.2f}x"
        )


if __name__ == "__main__":
    main()
