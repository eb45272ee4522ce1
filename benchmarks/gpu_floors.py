"""Issue 24's floors, read off one run of ``benchmarks/gpu.py``: met, missed or not measured.

Why a verdict table: the GPU is lent for 15 minutes a session, and the rows of one run are
many (each budget, each batch size, each side). The floors are what decides whether the
GPU path is done, so the run ends by saying, floor by floor, what was measured and whether
it holds, and where compiled blocks (``EMBEDDING_COMPILE_BLOCKS``, off by default) would
change the answer: that is the decision about making them the CUDA default.

Pure: it reads the ``results`` dictionary ``gpu.py`` fills (section -> rows) and imports
nothing heavy, so the suite checks it on rows shaped like a real run.
"""

from __future__ import annotations

import math
from typing import Any

# The floors (issue 24, on an H200; ratios from one run).
ENCODE_QWEN_RATIO, ENCODE_QWEN_PEAK_SHARE = 1.3, 0.40
ENCODE_MINILM_RATIO = 1.3
TRAIN_MINILM_RATIO = {32: 2.0, 128: 1.3}
TRAIN_LORA_RATIO = 1.5
FIRST_EPOCH_OVER_SECOND = 1.2
SERVE_SHARE, SERVE_P99_MS = 0.5, 100.0
VALIDATE_SUITE_S = 15.0

QWEN, MINILM = "qodo-1.5B-shape", "minilm"


def floor_verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per floor: ``floor``, ``measured`` (text), ``met`` (True, False, or None when
    the run has no figure for it), and ``compiled`` where the compiled rows would say
    otherwise than the default."""
    verdicts: list[dict[str, Any]] = []

    def add(floor: str, measured: str | None, met: bool | None, compiled: str | None = None):
        row: dict[str, Any] = {"floor": floor, "measured": measured or "not measured"}
        row["met"] = None if measured is None else met
        if compiled:
            row["compiled"] = compiled
        verdicts.append(row)

    summary = {row.get("model"): row for row in results.get("encode-summary", [])}
    _encode_floors(summary, add)
    _train_floors(results, add)
    serve = _first(results.get("serve", []), lambda r: "share" in r)
    if serve:
        met = serve["share"] >= SERVE_SHARE and serve["p99 ms"] <= SERVE_P99_MS
        measured = f"{serve['share']:.1%} of local, p99 {serve['p99 ms']:.0f} ms"
    else:
        met, measured = None, None
    add(
        f"embedded serve, 32 x 1 text: >= {SERVE_SHARE:.0%} of local, p99 <= {SERVE_P99_MS:g} ms",
        measured,
        met,
    )
    validate = _first(results.get("validate", []), lambda r: r.get("suite wall s") is not None)
    add(
        f"embedctl validate suite <= {VALIDATE_SUITE_S:g} s (and passes)",
        f"{validate['suite wall s']:.1f} s, {validate.get('verdict')}" if validate else None,
        bool(validate)
        and validate["suite wall s"] <= VALIDATE_SUITE_S
        and validate.get("exit") == 0,
    )
    return verdicts


def _encode_floors(summary: dict[str, dict[str, Any]], add) -> None:
    qwen, minilm = summary.get(QWEN), summary.get(MINILM)
    if qwen:
        ratio, share = qwen["ratio"], qwen["ours share of peak"]
        met = ratio >= ENCODE_QWEN_RATIO and share >= ENCODE_QWEN_PEAK_SHARE
        c_ratio, c_share = qwen.get("compiled ratio") or 0.0, qwen.get("compiled share of peak")
        compiled = None
        if c_share is not None and (
            (c_ratio >= ENCODE_QWEN_RATIO and c_share >= ENCODE_QWEN_PEAK_SHARE) != met
        ):
            compiled = f"compiled: {c_ratio:.2f}x, {c_share:.1%} of peak"
        add(
            f"1.5B encode >= {ENCODE_QWEN_RATIO}x ST, >= {ENCODE_QWEN_PEAK_SHARE:.0%} of peak",
            f"{ratio:.2f}x, {share:.1%} of peak",
            met,
            compiled,
        )
    else:
        add(f"1.5B encode >= {ENCODE_QWEN_RATIO}x ST", None, None)
    if minilm:
        ratio, c_ratio = minilm["ratio"], minilm.get("compiled ratio") or 0.0
        met = ratio >= ENCODE_MINILM_RATIO
        compiled = (
            f"compiled: {c_ratio:.2f}x"
            if minilm.get("compiled texts/s") and (c_ratio >= ENCODE_MINILM_RATIO) != met
            else None
        )
        add(
            f"minilm encode >= {ENCODE_MINILM_RATIO}x ST's best batch",
            f"{ratio:.2f}x",
            met,
            compiled,
        )
    else:
        add(f"minilm encode >= {ENCODE_MINILM_RATIO}x ST's best batch", None, None)
    for label, row in ((MINILM, minilm), (QWEN, qwen)):
        if not row:
            add(f"{label} 1-text p50 <= ST's", None, None)
            continue
        ours, st = row["ours 1-text p50 ms"], row["ST 1-text p50 ms"]
        c_ms = row.get("compiled 1-text p50 ms")
        compiled = (
            f"compiled: {c_ms:.1f} ms"
            if c_ms is not None and (c_ms <= st) != (ours <= st)
            else None
        )
        add(f"{label} 1-text p50 <= ST's", f"{ours:.1f} ms against {st:.1f}", ours <= st, compiled)


def _train_floors(results: dict[str, Any], add) -> None:
    train = results.get("train", [])
    for batch, floor in TRAIN_MINILM_RATIO.items():
        row = _first(train, lambda r, b=batch: r.get("model") == "minilm full" and r["batch"] == b)
        add(
            f"minilm MNRL batch {batch} >= {floor}x ST's loop",
            f"{row['ratio']:.2f}x" if row else None,
            bool(row) and row["ratio"] >= floor,
        )
    lora = _first(train, lambda r: str(r.get("model", "")).startswith(QWEN)) or {}
    ratio, ours_gb, st_gb = lora.get("ratio"), lora.get("ours GB"), lora.get("ST GB")
    measured = None
    if ratio is not None:
        measured = f"{ratio:.2f}x at {ours_gb:.1f} GB against {st_gb:.1f} GB"
    elif lora:
        measured = f"no ratio: ours {lora.get('ours', '-')}, ST {lora.get('ST', '-')}"
    add(
        f"1.5B LoRA >= {TRAIN_LORA_RATIO}x ST + peft at <= its peak memory",
        measured,
        ratio is not None and ratio >= TRAIN_LORA_RATIO and ours_gb <= st_gb,
    )
    losses = lora.get("ours losses")
    if not lora:
        measured = None
    elif losses:
        measured = f"losses {losses} ({lora.get('ours dtype')})"
    else:
        measured = str(lora.get("ours"))
    add(
        "1.5B LoRA in bf16: no NaN",
        measured,
        bool(losses) and all(math.isfinite(x) for x in losses),
    )
    first, second = lora.get("ours epoch 1 pairs/s"), lora.get("ours epoch 2 pairs/s")
    add(
        f"1.5B LoRA first epoch within {FIRST_EPOCH_OVER_SECOND}x of the second",
        f"{second / first:.2f}x" if first and second else None,
        bool(first and second) and second / first <= FIRST_EPOCH_OVER_SECOND,
    )
    ours_attention = _first(
        results.get("attention", []),
        lambda r: r.get("cuDNN attention") is False and r.get("width multiple") == 1,
    )
    add(
        f"minilm MNRL first epoch within {FIRST_EPOCH_OVER_SECOND}x of the second",
        f"{ours_attention['epoch 1 / epoch 2']:.2f}x" if ours_attention else None,
        bool(ours_attention) and ours_attention["epoch 1 / epoch 2"] <= FIRST_EPOCH_OVER_SECOND,
    )


def _first(rows: list[dict[str, Any]], keep) -> dict[str, Any] | None:
    return next((row for row in rows if keep(row)), None)


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    """The verdicts as aligned text, one floor a line."""
    mark = {True: "met", False: "MISSED", None: "-"}
    width = max(len(v["floor"]) for v in verdicts)
    lines = []
    for v in verdicts:
        extra = f"  ({v['compiled']})" if v.get("compiled") else ""
        lines.append(f"  {v['floor']:<{width}}  {mark[v['met']]:<6}  {v['measured']}{extra}")
    met = sum(1 for v in verdicts if v["met"])
    measured = sum(1 for v in verdicts if v["met"] is not None)
    lines.append(f"  {met} of {measured} measured floors met ({len(verdicts)} floors)")
    return "\n".join(lines)
