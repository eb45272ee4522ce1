"""The benchmark scripts run end to end, as a user would start them, on small sizes.

Speed is not asserted here (that is what the scripts print for a person to read and record in
benchmarks/RESULTS.md); these tests make sure each script still starts from its own folder,
runs ours and the peer, and prints its ratios, so a figure in RESULTS.md can be reproduced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # as a user runs it: `python benchmarks/NAME.py`
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def ratios(text: str) -> list[float]:
    """The measured ratios printed (``ratio ...: 1.23x``), not the floors beside them."""
    return [float(x) for x in re.findall(r"ratio[^:\n]*:? (\d+\.\d+)x", text)]


@pytest.mark.slow
def test_encode_benchmark_prints_ratios_and_precision():
    out = run_script("encode.py", "--n", "24", "--rounds", "1", "--latency-repeats", "3")
    assert "ratio ours/ST fp32 default" in out and "ratio ours/ST same bf16" in out, out
    assert len(ratios(out)) >= 3 and all(r > 0 for r in ratios(out)), out
    cosines = [float(x) for x in re.findall(r"\s(0\.\d{6}|1\.000000)\s*$", out, re.M)]
    assert cosines and min(cosines) >= 0.9999, out  # the default precision's bar


@pytest.mark.slow
def test_train_benchmark_prints_the_step_ratio():
    out = run_script("train.py", "--repeats", "3")
    assert "ratio ours/ST full step" in out, out
    assert len(ratios(out)) == 1 and ratios(out)[0] > 0, out


@pytest.mark.slow
def test_train_memory_benchmark_prints_both_peaks_and_the_ratio():
    out = run_script(
        "train_memory.py",
        "--plain-batch",
        "4",
        "--cached-batch",
        "8",
        "--mini-batch-size",
        "4",
        "--tokens",
        "32",
    )
    assert "mnrl, batch 4" in out and "cached_mnrl, batch 8, mini 4" in out, out
    assert len(ratios(out)) == 1 and ratios(out)[0] > 0, out


@pytest.mark.slow
def test_realistic_train_benchmark_runs_both_trainers_each_in_its_own_process():
    """One epoch of MNRL on a few stdlib pairs, ours and SentenceTransformerTrainer (which
    needs the `datasets` package), each a child process with its own peak RSS."""
    out = run_script(
        "train.py", "--realistic", "--n", "24", "--batches", "8", "--no-precision-check"
    )
    assert "ratio ours/ST pairs/s in training" in out and "peak RSS ours/ST" in out, out
    rss = [
        float(x) for x in re.findall(r"^\s+8 (?:ours|ST)\s.*\s(\d+)\s+\d+\s+\d+\.\d%$", out, re.M)
    ]
    assert len(rss) == 2 and all(r > 100 for r in rss), out  # each side's own VmHWM, in MB


@pytest.mark.slow
@pytest.mark.integration
def test_queue_benchmark_runs_against_a_real_worker():
    out = run_script("queue.py", "--repeats", "3", "--batch", "16", "--rounds", "1")
    assert "overhead p50" in out and "encoding=base64" in out and "encoding=json" in out, out
    assert len(ratios(out)) == 2, out


@pytest.mark.slow
@pytest.mark.integration
def test_serve_benchmark_runs_our_side_of_every_load():
    """Starts a real embed worker and the API, then one request per client and load, and the
    cache pass. Infinity's side (``--peer infinity``, the default) is left to the benchmark
    run whose figures go in benchmarks/RESULTS.md: installing its virtualenv costs minutes
    on a fresh clone, which the 20-minute bound of the suite cannot afford."""
    out = run_script("serve.py", "--requests", "1", "--warmup", "0", "--peer", "none")
    assert "Infinity" not in out and "cache hit through the API" in out, out
    for clients, k in ((32, 1), (4, 32), (1, 1)):
        row = re.search(rf"^{clients} clients x {k} texts?\s+ours, send_task.*\s(\S+)$", out, re.M)
        assert row and float(row.group(1)) > 0, out  # the machine's CPU ms a text, last column
    assert len(ratios(out)) == 4 and all(r > 0 for r in ratios(out)), out


@pytest.mark.slow
def test_recipes_benchmark_prints_both_recipes_and_the_gain_ratio(tmp_path):
    """Tiny sizes: the gains are noise here, so the ratio may be 'n/a'; the shape is checked."""
    figures = tmp_path / "recipes.json"
    out = run_script(
        "recipes.py",
        *("--n-train", "16", "--n-eval", "16", "--batch-size", "8", "--json", str(figures)),
    )
    assert re.search(r"^plain\s+16 ", out, re.M) and re.search(r"^mined\s+16 ", out, re.M), out
    assert re.search(r"ratio mined/plain mrr@10 gain: (\d+\.\d+x|n/a)", out), out
    saved = json.loads(figures.read_text())
    assert saved["mining"]["pairs"] == 16 and set(saved["after"]) == {"plain", "mined"}
