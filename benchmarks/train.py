"""One training step on the seed's 5 triplets: ours against sentence-transformers, alternating.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train.py [--repeats 30]

Peer: ST's TripletLoss (cosine distance, same margin) with torch's default AdamW, fp32, three
forward passes (anchor, positive, negative) as ST runs it. Ours: the trainer's step - one
forward over all 15 texts under bf16 autocast, backward, clip, fused AdamW. Each full step
(tokenize -> forward -> loss -> backward -> optimizer) is timed; medians, and the ratio.
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

import torch

from embedding.data import SEED_TRIPLETS
from embedding.training import TrainConfig, batch_loss, load_for_training, make_optimizer
from embedding.validation.benchmark import TIMING_MARGIN


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import TripletDistanceMetric, TripletLoss

    ours = load_for_training("minilm")
    ours.model.train()
    config = TrainConfig(loss="triplet", lr=1e-5, margin=TIMING_MARGIN)
    our_opt = make_optimizer(ours.model, config)

    st = SentenceTransformer(ours.load_reports[0].path, device="cpu")
    st.train()
    st_loss = TripletLoss(
        st, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=TIMING_MARGIN
    )
    st_opt = torch.optim.AdamW(st.parameters(), lr=1e-5)
    columns = [[t[i] for t in SEED_TRIPLETS] for i in range(3)]

    def our_step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = batch_loss(ours, SEED_TRIPLETS, config)
        loss.backward()
        t1 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(ours.model.parameters(), 1.0)
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t1

    def st_step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = st_loss([st.tokenize(c) for c in columns], None)
        loss.backward()
        t1 = time.perf_counter()
        st_opt.step()
        st_opt.zero_grad()
        return t1 - t0, time.perf_counter() - t1

    timings: dict[str, list[tuple[float, float]]] = {"ours": [], "ST": []}
    for i in range(args.repeats + 3):
        for name, step in (("ours", our_step), ("ST", st_step)):
            took = step()
            if i >= 3:
                timings[name].append(took)
    print(
        f"one step, 5 triplets (15 texts), {args.repeats} alternating repeats, median ms; torch threads {torch.get_num_threads()}"
    )
    print(f"{'':<6}{'fwd+bwd':>10}{'optimizer':>11}{'full step':>11}   precision")
    full = {}
    for name, rows in timings.items():
        fb = statistics.median(r[0] for r in rows) * 1000
        opt = statistics.median(r[1] for r in rows) * 1000
        full[name] = statistics.median(sum(r) for r in rows) * 1000
        precision = ours.precision if name == "ours" else "fp32"
        print(f"{name:<6}{fb:>10.1f}{opt:>11.1f}{full[name]:>11.1f}   {precision}")
    print(f"ratio ours/ST full step: {full['ours'] / full['ST']:.2f}x (floor <= 0.8x)")


if __name__ == "__main__":
    main()
