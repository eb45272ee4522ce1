"""Issue 24's floors read off a ``benchmarks/gpu.py`` run (benchmarks/gpu_floors.py).

The rows are shaped as gpu.py records them, with the figures of the H200's second run
(benchmarks/RESULTS.md, 2026-12-04), whose verdicts are known: what it met and missed.
"""

from __future__ import annotations

import math

from benchmarks.gpu_floors import floor_verdicts, verdict_table


def h200_run_2() -> dict:
    return {
        "encode-summary": [
            {
                "model": "minilm",
                "ratio": 0.98,
                "ours share of peak": 0.01,
                "ours 1-text p50 ms": 3.92,
                "ST 1-text p50 ms": 8.20,
                "compiled ratio": 0.0,
                "blocks compiled": "failed: RuntimeError: no compiler",
            },
            {
                "model": "qodo-1.5B-shape",
                "ratio": 1.18,
                "ours share of peak": 0.331,
                "ours 1-text p50 ms": 37.1,
                "ST 1-text p50 ms": 29.4,
                "compiled ratio": 0.0,
                "blocks compiled": "failed: RuntimeError: no compiler",
            },
        ],
        "attention": [
            {"cuDNN attention": True, "width multiple": 1, "epoch 1 / epoch 2": 4.64},
            {"cuDNN attention": False, "width multiple": 1, "epoch 1 / epoch 2": 1.28},
            {"cuDNN attention": False, "width multiple": 64, "epoch 1 / epoch 2": 1.24},
        ],
        "train": [
            {"model": "minilm full", "batch": 32, "ratio": 3.11},
            {"model": "minilm full", "batch": 128, "ratio": 2.60},
            {
                "model": "qodo-1.5B-shape LoRA r8",
                "batch": 32,
                "ours epoch 1 pairs/s": 20.4,
                "ours epoch 2 pairs/s": 21.5,
                "ours losses": [3.567, 3.199],
                "ours dtype": "bf16",
                "ours GB": 47.1,
                "ST GB": 74.8,
                "ratio": 0.99,
            },
        ],
        "serve": [{"share": 0.028, "p99 ms": 701.0, "p50 ms": 575.0}],
        "validate": [{"exit": 0, "suite wall s": 20.2, "verdict": "PASS"}],
    }


def by_floor(verdicts: list[dict]) -> dict[str, dict]:
    return {v["floor"].split(" >=")[0].split(" <=")[0].split(":")[0]: v for v in verdicts}


def test_the_h200_second_run_meets_and_misses_what_it_did():
    verdicts = by_floor(floor_verdicts(h200_run_2()))
    met = {name: v["met"] for name, v in verdicts.items()}
    assert met == {
        "1.5B encode": False,  # 1.18x, 33 % of peak
        "minilm encode": False,  # 0.98x
        "minilm 1-text p50": True,  # 3.9 against 8.2 ms
        "qodo-1.5B-shape 1-text p50": False,  # 37.1 against 29.4 ms
        "minilm MNRL batch 32": True,
        "minilm MNRL batch 128": True,
        "1.5B LoRA": False,  # 0.99x
        "1.5B LoRA in bf16": True,  # no NaN
        "1.5B LoRA first epoch within 1.2x of the second": True,  # 1.05x
        "minilm MNRL first epoch within 1.2x of the second": False,  # 1.28x
        "embedded serve, 32 x 1 text": False,  # 2.8 %, p99 701 ms
        "embedctl validate suite": False,  # 20.2 s
    }
    assert verdicts["1.5B encode"]["measured"] == "1.18x, 33.1% of peak"
    assert "compiled" not in verdicts["1.5B encode"]  # the compile failed: nothing to say
    table = verdict_table(list(verdicts.values()))
    assert table.splitlines()[-1] == "  5 of 12 measured floors met (12 floors)"
    assert "MISSED  20.2 s, PASS" in table
    assert verdicts["1.5B LoRA in bf16"]["measured"] == "losses [3.567, 3.199] (bf16)"


def test_compiled_blocks_are_named_where_they_would_change_the_verdict():
    results = h200_run_2()
    qwen = results["encode-summary"][1]
    qwen.update({"compiled ratio": 1.42, "compiled share of peak": 0.45})
    qwen.update({"compiled texts/s": 660.0, "compiled 1-text p50 ms": 12.0})
    minilm = results["encode-summary"][0]
    minilm.update({"compiled ratio": 1.1, "compiled texts/s": 2600.0})
    verdicts = by_floor(floor_verdicts(results))
    assert verdicts["1.5B encode"]["compiled"] == "compiled: 1.42x, 45.0% of peak"
    assert verdicts["qodo-1.5B-shape 1-text p50"]["compiled"] == "compiled: 12.0 ms"
    assert "compiled" not in verdicts["minilm encode"]  # missed either way


def test_a_diverged_lora_and_missing_sections_are_said_as_such():
    results = h200_run_2()
    del results["serve"], results["validate"], results["encode-summary"]
    results["train"][2] = {
        "model": "qodo-1.5B-shape LoRA r8",
        "batch": 32,
        "ours": "TrainingDiverged: gradient norm is nan at epoch 1, step 11",
        "ST pairs/s": 21.9,
        "ST GB": 132.0,
    }
    verdicts = by_floor(floor_verdicts(results))
    lora = verdicts["1.5B LoRA"]
    assert lora["met"] is False and "TrainingDiverged" in lora["measured"]
    assert verdicts["1.5B LoRA in bf16"]["met"] is False
    assert "TrainingDiverged" in verdicts["1.5B LoRA in bf16"]["measured"]
    for name in ("1.5B encode", "minilm encode", "embedded serve, 32 x 1 text"):
        assert verdicts[name] == {**verdicts[name], "met": None, "measured": "not measured"}
    assert verdicts["embedctl validate suite"]["met"] is None
    losses_nan = h200_run_2()
    losses_nan["train"][2]["ours losses"] = [3.5, math.nan]
    assert by_floor(floor_verdicts(losses_nan))["1.5B LoRA in bf16"]["met"] is False
