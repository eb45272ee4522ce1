"""Training benchmarks: ours against sentence-transformers (ST) on the same model and data.

Two modes.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train.py [--repeats 30]

One training step on the seed's 5 triplets, the two alternating in one process. Peer: ST's
TripletLoss (cosine distance, same margin) with torch's default AdamW, fp32, three forward
passes (anchor, positive, negative) as ST runs it. Ours: the trainer's step under bf16
autocast, backward, clip, fused AdamW. Each full step (tokenize -> forward -> loss ->
backward -> optimizer) is timed; medians, and the ratio.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train.py --realistic [--n 400] [--batches 16,32]

A real job: one epoch of MultipleNegativesRankingLoss on the first N stdlib docstring -> code
pairs (``embedctl data codesearch --source stdlib``), minilm, lr 2e-5, at each batch size.
Each side runs as a whole process of its own, one after the other (``--rounds`` alternates
them again), so each peak RSS (the child's VmHWM) is its own:

* ours: ``embedding.training.loop.finetune`` at the default precision, a two-row eval set (the
  before/after evaluation a job always does) and the export of the model; no checkpoints.
* peer: ST 6.2 ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``, its
  defaults (fp32, fused AdamW), the same lr, batch, warmup share and weight decay; no eval,
  no checkpoints, no saving.

Printed per side: the training time (ours: the epoch loop; ST: ``trainer.train()``) and
pairs/s over it, the whole process wall time and pairs/s over it, peak RSS, and the share
of a bf16 matmul peak measured in the same run that the training achieves. Achieved FLOPs
count only the tokens actually in the data (after truncation to 256, no padding) at
6 x non-embedding parameters per token (2 forward + 4 backward per weight; attention scores
and the embedding lookup are left out), so padding shows up as a lower share, not as work.
Finally, ours is run once more in fp32 at the largest batch and the two exported models are
compared on held-out texts (min cosine), the check that the default precision trains the
same model (``--no-precision-check`` skips it).
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
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

REALISTIC_LR = 2e-5
REALISTIC_SEED = 42


# ------------------------------------------------------------ the 5-triplet step
def step_benchmark(repeats: int) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import TripletDistanceMetric, TripletLoss

    from embedding.data.examples import SEED_TRIPLETS
    from embedding.training.config import TrainConfig
    from embedding.training.setup import load_for_training, make_optimizer
    from embedding.training.steps import batch_loss
    from embedding.validation.benchmark import TIMING_MARGIN

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
    for i in range(repeats + 3):
        for name, step in (("ours", our_step), ("ST", st_step)):
            took = step()
            if i >= 3:
                timings[name].append(took)
    print(
        f"one step, 5 triplets (15 texts), {repeats} alternating repeats, median ms; "
        f"torch threads {torch.get_num_threads()}"
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


# ------------------------------------------------------------- realistic: children
def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(data: Path, batch: int, precision: str | None, out: Path) -> dict:
    from embedding.data.examples import load_examples
    from embedding.training.config import TrainConfig
    from embedding.training.loop import finetune

    rows = load_examples(data / "train.jsonl")
    eval_rows = load_examples(data / "eval2.jsonl")
    config = TrainConfig(
        loss="mnrl",
        epochs=1,
        lr=REALISTIC_LR,
        batch_size=batch,
        seed=REALISTIC_SEED,
        precision=precision,
    )
    started = time.perf_counter()
    result = finetune("minilm", rows, config, out_dir=out / "model", eval_examples=eval_rows)
    return {
        "call_s": time.perf_counter() - started,
        "train_s": result.seconds,
        "precision": result.settings["precision"],
        "output": result.output_dir,
        "loss": result.epoch_losses[-1],
    }


def child_peer(data: Path, batch: int, model_path: str, out: Path) -> dict:
    import pyarrow
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:  # sentence-transformers 6 moved it; the old path warns
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    from embedding.data.examples import load_examples

    rows = load_examples(data / "train.jsonl")
    started = time.perf_counter()
    model = SentenceTransformer(model_path, device="cpu")
    columns = {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]}
    # Not Dataset.from_dict: its fingerprint pickles the Arrow table with dill, which fails
    # here ("Can't pickle <class 'MonthDayNano'>", datasets 5.2 with pyarrow 24-26); a fixed
    # fingerprint skips that and changes nothing else (no cache is written or read).
    dataset = Dataset(pyarrow.table(columns), fingerprint="train-benchmark")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st"),
        num_train_epochs=1,
        per_device_train_batch_size=batch,
        learning_rate=REALISTIC_LR,
        warmup_steps=0.1,  # ours: warmup_ratio 0.1
        weight_decay=0.01,  # ours: 0.01 on weights, none on biases and norms, as HF's
        seed=REALISTIC_SEED,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )
    trained = time.perf_counter()
    output = trainer.train()
    return {
        "call_s": time.perf_counter() - started,
        "train_s": time.perf_counter() - trained,
        "precision": "fp32",
        "loss": output.training_loss,
    }


# ------------------------------------------------------------- realistic: parent
def write_data(folder: Path, n: int) -> list[tuple[str, str]]:
    """The first ``n`` training pairs of the stdlib code-search set, and a 2-row eval file."""
    from embedding.data.codesearch import build_pairs, stdlib_root
    from embedding.data.examples import write_examples

    train, held_out, _ = build_pairs(stdlib_root())
    if n > len(train):
        raise SystemExit(f"--n {n}: the stdlib gives only {len(train)} training pairs")
    write_examples(folder / "train.jsonl", train[:n])
    write_examples(folder / "eval2.jsonl", held_out[:2])
    return held_out


def run_child(argv: list[str], result_file: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--result", str(result_file)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"child {argv} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(result_file.read_text()), "process_s": wall}


def realistic_benchmark(args: argparse.Namespace) -> None:
    import importlib.util

    from embedding.inference.encoder import Encoder

    if importlib.util.find_spec("datasets") is None:  # ST's trainer needs it (and accelerate)
        raise SystemExit(
            "the peer, SentenceTransformerTrainer, needs `datasets`: pip install datasets"
        )
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        folder = Path(tmp)
        held_out = write_data(folder, args.n)
        encoder = Encoder.load("minilm", precision="fp32")
        model_path = encoder.load_reports[0].path
        from embedding.data.examples import load_examples

        rows = load_examples(folder / "train.jsonl")
        texts = [t for row in rows for t in row]
        sequences, _ = encoder.prepare(texts)
        tokens = sum(len(s) for s in sequences)
        params = sum(
            p.numel() for name, p in encoder.model.named_parameters() if "embeddings" not in name
        )
        del encoder
        from benchmarks.encode import matmul_peak_gflops  # the one measurement of the peak

        peak = matmul_peak_gflops(torch.bfloat16, seconds=1.0)

        runs: dict[tuple[int, str], list[dict]] = {}
        outputs: dict[int, str] = {}
        for round_ in range(args.rounds):
            for batch in batches:
                for side in ("ours", "ST"):
                    out = folder / f"{side}-{batch}-{round_}"
                    argv = ["--child", side, "--data", tmp, "--batch", str(batch)]
                    argv += ["--out", str(out), "--model-path", model_path]
                    run = run_child(argv, folder / "result.json")
                    runs.setdefault((batch, side), []).append(run)
                    if side == "ours":
                        outputs[batch] = run["output"]

        print(
            f"one epoch of MNRL on {args.n} stdlib pairs ({tokens} tokens after truncation to "
            f"256, no padding), minilm, lr {REALISTIC_LR:g}; {args.rounds} round(s), medians; "
            f"torch threads {torch.get_num_threads()}; bf16 matmul peak {peak:.0f} GFLOP/s"
        )
        header = (
            f"{'batch':>5} {'side':<5}{'precision':>10}{'train s':>9}{'pairs/s':>9}"
            f"{'process s':>11}{'pairs/s':>9}{'peak RSS MB':>13}{'GFLOP/s':>9}{'of peak':>9}"
        )
        print(header)
        summary: dict[tuple[int, str], dict[str, float]] = {}
        for (batch, side), results in runs.items():
            train_s = statistics.median(r["train_s"] for r in results)
            process_s = statistics.median(r["process_s"] for r in results)
            rss = max(r["peak_rss_mb"] for r in results)
            achieved = 6 * params * tokens / train_s / 1e9
            summary[(batch, side)] = {"train": args.n / train_s, "process": args.n / process_s}
            summary[(batch, side)]["rss"] = rss
            print(
                f"{batch:>5} {side:<5}{results[0]['precision']:>10}{train_s:>9.1f}"
                f"{args.n / train_s:>9.2f}{process_s:>11.1f}{args.n / process_s:>9.2f}"
                f"{rss:>13.0f}{achieved:>9.0f}{achieved / peak:>9.1%}"
            )
        for batch in batches:
            ours, st = summary[(batch, "ours")], summary[(batch, "ST")]
            floor = " (floor >= 2x)" if batch == max(batches) else ""
            print(
                f"batch {batch}: ratio ours/ST pairs/s in training: "
                f"{ours['train'] / st['train']:.2f}x{floor}; whole process: "
                f"{ours['process'] / st['process']:.2f}x; "
                f"peak RSS ours/ST: {ours['rss'] / st['rss']:.2f}x (floor <= 1x)"
            )
        if args.precision_check:
            precision_check(folder, max(batches), outputs[max(batches)], held_out, args.n)


def precision_check(folder: Path, batch: int, default_output: str, held_out, n: int) -> None:
    """Train once more in fp32 (same seed, same order); compare the two models' embeddings."""
    import numpy as np

    from embedding.inference.encoder import Encoder

    out = folder / f"ours-fp32-{batch}"
    argv = ["--child", "ours", "--data", str(folder), "--batch", str(batch), "--out", str(out)]
    run = run_child([*argv, "--precision", "fp32"], folder / "result.json")
    texts = [t for row in held_out[:100] for t in row]
    a = Encoder.load(Path(default_output), precision="fp32").encode(texts)
    b = Encoder.load(Path(run["output"]), precision="fp32").encode(texts)
    cosines = (np.asarray(a) * np.asarray(b)).sum(axis=1)
    print(
        f"ours fp32 at batch {batch}: {n / run['train_s']:.2f} pairs/s in training, peak RSS "
        f"{run['peak_rss_mb']:.0f} MB; final model, default precision vs fp32 run, on "
        f"{len(texts)} held-out texts (encoded in fp32): min cosine {cosines.min():.6f}, "
        f"mean {cosines.mean():.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="5-triplet step: repeats")
    parser.add_argument("--realistic", action="store_true", help="one epoch of MNRL, N pairs")
    parser.add_argument("--n", type=int, default=400, help="realistic: training pairs")
    parser.add_argument(
        "--batches", default="16,32", help="realistic: batch sizes, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=1, help="realistic: alternating rounds")
    parser.add_argument(
        "--no-precision-check",
        dest="precision_check",
        action="store_false",
        help="realistic: skip the fp32 run that checks the default precision's final model",
    )
    # A child process of --realistic (internal).
    parser.add_argument("--child", choices=("ours", "ST"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        data, out = Path(args.data), Path(args.out)
        if args.child == "ours":
            result = child_ours(data, args.batch, args.precision, out)
        else:
            result = child_peer(data, args.batch, args.model_path, out)
        result["peak_rss_mb"] = peak_rss_mb()
        Path(args.result).write_text(json.dumps(result))
    elif args.realistic:
        realistic_benchmark(args)
    else:
        step_benchmark(args.repeats)


if __name__ == "__main__":
    main()
