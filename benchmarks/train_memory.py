"""Peak memory of one training step: plain MNRL at batch 32 against cached MNRL at batch 256.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_memory.py [--precision fp32]

The issue's floor: cached MNRL (GradCache) at an effective batch of 256, in mini-batches of
32 texts, within 1.2x the peak RSS of plain MNRL at batch 32. Each variant runs in its own
process (so each peak is its own): load minilm for training, then one full step (tokenize,
forward, loss, backward, clip, fused AdamW) on pairs whose both sides are ~``--tokens``
tokens long (chunks of the standard library's own source, cut at the model's 256 tokens).
The figure is the process's peak resident set (``VmHWM``), with the RSS after loading
beside it, so the step's own share shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is sys.path[0], and its queue.py would shadow the stdlib's
# queue (torch imports it): put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import subprocess
import sysconfig
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FLOOR = 1.2  # cached peak / plain peak


def code_pairs(n: int, tokens: int) -> list[tuple[str, str]]:
    """``n`` (code, code) pairs of about ``tokens`` tokens each, always the same ones: chunks
    of the standard library's source, in file-name order (about 4 characters a token)."""
    chars = tokens * 4
    chunks: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks += [text[i : i + chars] for i in range(0, len(text) - chars, chars)]
        if len(chunks) >= 2 * n:
            break
    if len(chunks) < 2 * n:
        raise SystemExit(f"only {len(chunks)} chunks of stdlib source for {n} pairs")
    return [(chunks[2 * i], chunks[2 * i + 1]) for i in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB; ru_maxrss where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One variant: load, one training step, print the figures as JSON."""
    import torch

    from embedding.training.config import TrainConfig
    from embedding.training.setup import load_for_training, make_optimizer
    from embedding.training.steps import batch_backward

    rows = code_pairs(args.batch, args.tokens)
    encoder = load_for_training("minilm", args.precision)
    encoder.model.train()
    config = TrainConfig(loss=args.loss, batch_size=args.batch, mini_batch_size=args.mini)
    optimizer = make_optimizer(encoder.model, config)
    loaded = rss_mb()
    started = time.perf_counter()
    loss = batch_backward(encoder, rows, config, 1.0)
    torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), config.max_grad_norm)
    optimizer.step()
    seconds = time.perf_counter() - started
    tokens = len(encoder.prepare([rows[0][0]])[0][0])
    print(
        json.dumps(
            {
                "loss": loss,
                "rss_after_load_mb": loaded,
                "peak_rss_mb": peak_rss_mb(),
                "step_s": seconds,
                "precision": encoder.precision,
                "tokens_per_text": tokens,
            }
        )
    )


def run(loss: str, batch: int, mini: int, tokens: int, precision: str | None) -> dict:
    command = [sys.executable, __file__, "--child", loss, "--batch", str(batch)]
    command += ["--mini", str(mini), "--tokens", str(tokens)]
    command += ["--precision", precision] if precision else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{loss} at batch {batch} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain-batch", type=int, default=32)
    parser.add_argument("--cached-batch", type=int, default=256)
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256, help="tokens per text (about)")
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (default: the spec's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mini", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.loss = args.child
        child(args)
        return

    mini = args.mini_batch_size
    plain = run("mnrl", args.plain_batch, mini, args.tokens, args.precision)
    cached = run("cached_mnrl", args.cached_batch, mini, args.tokens, args.precision)
    print(
        f"minilm, one training step, pairs of {plain['tokens_per_text']} tokens a text, "
        f"precision {plain['precision']}, each variant in its own process"
    )
    print(f"{'variant':<34} {'after load MB':>13} {'peak RSS MB':>12} {'step s':>8}")
    for name, figures in (
        (f"mnrl, batch {args.plain_batch}", plain),
        (f"cached_mnrl, batch {args.cached_batch}, mini {mini}", cached),
    ):
        print(
            f"{name:<34} {figures['rss_after_load_mb']:>13.0f} "
            f"{figures['peak_rss_mb']:>12.0f} {figures['step_s']:>8.1f}"
        )
    ratio = cached["peak_rss_mb"] / plain["peak_rss_mb"]
    verdict = "meets" if ratio <= FLOOR else "MISSES"
    print(f"ratio peak RSS cached/plain: {ratio:.2f}x ({verdict} the floor of {FLOOR}x)")


if __name__ == "__main__":
    main()
