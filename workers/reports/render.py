"""Validation results as a readable console report and as JUnit XML for CI; A/B
evaluations as a table.

The report keeps the seed guide's shape — one section per check with its figures, then a
summary — and adds what the seed lacked: every criterion with its threshold and actual
value, and plain statuses (``unavailable`` is not ``passed``).

An evaluation (``workers.jobs.evaluation_run.read``) renders as one table of both models'
metrics and the differences B - A with their intervals, then the verdict
(:func:`render_evaluation`, what ``embedctl compare`` prints); recent evaluations as one
line each (:func:`render_evaluations`, in ``embedctl report``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

RULE = "=" * 80
MARK = {"passed": "PASS", "failed": "FAIL", "unavailable": "UNAVAILABLE", "error": "ERROR"}
TITLES = {
    "model_loading": "Model loading",
    "inference_quality": "Inference quality",
    "convergence": "Fine-tuning convergence",
    "benchmark": "Performance benchmark",
}


def render_report(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    checks = summary.get("checks", [])
    for check in checks:
        lines += [
            RULE,
            f"{TITLES.get(check['name'], check['name'])}: {MARK.get(check['status'], check['status'])}"
            f"  ({check.get('duration_s', 0):.1f} s)",
            RULE,
        ]
        if check.get("reason"):
            lines.append(f"  reason: {check['reason']}")
        lines += _figure_lines(check["name"], check.get("figures", {}))
        lines.append("")
    lines += [RULE, "Summary of criteria", RULE]
    width = max([len(c["name"]) for ch in checks for c in ch.get("criteria", [])] + [10])
    for check in checks:
        for c in check.get("criteria", []):
            mark = "PASS" if c["passed"] else "FAIL"
            lines.append(
                f"  {mark}  {check['name']:<18} {c['name']:<{width}}  {_short(c['actual']):>22}  ({c['threshold']})"
            )
        if not check.get("criteria"):
            lines.append(
                f"  {MARK.get(check['status'], '?'):<4}  {check['name']:<18} {check.get('reason') or ''}"
            )
    lines += [RULE, f"VERDICT: {summary.get('status', '?').upper()} — {summary.get('verdict', '')}"]
    if summary.get("wall_time_s") is not None:
        lines.append(f"suite wall time: {summary['wall_time_s']:.1f} s")
    return "\n".join(lines)


def _figure_lines(name: str, figures: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if name == "model_loading":
        for model, fig in figures.items():
            if not isinstance(fig, dict):
                continue
            if fig.get("available") is False:
                out.append(f"  {model}: unavailable")
                continue
            out.append(
                f"  {model}: {fig.get('load_time_ms', 0):.0f} ms, {fig.get('size_mb', 0):.1f} MB, "
                f"weights present {fig.get('weights_present')}, {fig.get('tensor_count')} tensors, "
                f"{fig.get('parameter_count', 0):,} parameters, source {fig.get('source')}"
            )
    elif name == "inference_quality":
        out.append(
            f"  model {figures.get('model')}, {figures.get('dims')} dims, norms {figures.get('norms')}"
        )
        out.append(
            "  pair                                                        cosine   score=(1+cos)/2"
        )
        for pair in figures.get("pairs", []):
            label = f"{pair['a'][:26]} <-> {pair['b'][:26]}"
            out.append(f"  {label:<58} {pair['cosine']:>8.4f}   {pair['score']:.4f}")
        for comp in figures.get("similar_vs_unrelated", []):
            out.append(
                f"  related {comp['related_cos']:.3f} > unrelated {comp['unrelated_cos']:.3f}: "
                f"{'yes' if comp['ok'] else 'NO'}  ({comp['related'][0][:30]} ...)"
            )
        if figures.get("edge_cases"):
            out.append(
                "  edge cases: "
                + ", ".join(
                    f"{k} {'ok' if v else 'FAILED'}" for k, v in figures["edge_cases"].items()
                )
            )
    elif name == "convergence":
        for i, loss in enumerate(figures.get("epoch_losses", []), start=1):
            out.append(f"  epoch {i}: loss {loss:.6f}")
        if "improvement" in figures:
            out.append(
                f"  improvement {figures['improvement']:.1%} in {figures.get('train_seconds', 0):.2f} s"
            )
        if figures.get("settings"):
            out.append(f"  settings: {json.dumps(figures['settings'])}")
    elif name == "benchmark":
        lat = figures.get("latency") or {}
        if lat:
            out.append(
                f"  single embedding ({lat.get('iterations')} iterations): mean {lat['mean_ms']:.2f} ms, "
                f"min {lat['min_ms']:.2f}, max {lat['max_ms']:.2f}, p50 {lat['p50_ms']:.2f}, p95 {lat['p95_ms']:.2f} ms"
            )
            out.append(
                f"  batch throughput {figures.get('throughput_per_s', 0):.1f} texts/s (batch {figures.get('batch_size')}), "
                f"peak memory {figures.get('peak_memory_mb', 0):.0f} MB, device {figures.get('device')}, "
                f"precision {figures.get('precision')}"
            )
        grad = figures.get("gradient") or {}
        if grad:
            out.append(
                "  gradient step (5 triplets): forward+backward "
                f"{grad.get('forward_backward_ms', 0):.1f} ms, optimizer {grad.get('optimizer_ms', 0):.1f} ms, "
                f"precision {grad.get('precision')}"
                + (f", {grad['threads']} threads" if grad.get("threads") else "")
            )
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 22 else text[:19] + "..."


def render_junit(summary: dict[str, Any]) -> str:
    """One testsuite; one testcase per criterion (a check without criteria is one testcase),
    and an ``<error>`` case for a run that ended in error or failure with none of its
    cases failing (a run that never ran its checks)."""
    checks = summary.get("checks", [])
    suite = ET.Element("testsuite", name="embedding_validation")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for check in checks:
        duration = float(check.get("duration_s") or 0)
        total_time += duration
        cases: list[tuple[str, str | None, str | None]] = []  # (name, kind, message)
        for c in check.get("criteria", []):
            failure = (
                None if c["passed"] else f"expected {c['threshold']}, got {_short(c['actual'])}"
            )
            cases.append((c["name"], "failure" if failure else None, failure))
        if check["status"] in ("unavailable", "error") or not cases:
            kind = {"unavailable": "skipped", "error": "error", "passed": None}.get(
                check["status"], "failure"
            )
            cases.append(
                (f"{check['name']} status", kind, str(check.get("reason") or check["status"]))
            )
        for name, kind, message in cases:
            counts["tests"] += 1
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"embedding_validation.{check['name']}",
                name=name,
                time=f"{duration / len(cases):.3f}",
            )
            if kind:
                counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
                ET.SubElement(case, kind, message=message or "")
    if summary.get("status") in ("error", "failed") and not (counts["failures"] + counts["errors"]):
        # The run itself did not finish (no worker, a deadline, a dead check task): CI must
        # see an error, never an empty or all-green suite.
        counts["tests"] += 1
        counts["errors"] += 1
        case = ET.SubElement(suite, "testcase", classname="embedding_validation", name="run")
        ET.SubElement(case, "error", message=str(summary.get("verdict") or summary["status"]))
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{total_time:.3f}")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


# ------------------------------------------------------------------ A/B evaluations
def _model_label(model: dict[str, Any]) -> str:
    loaded = model.get("version") or model.get("loaded")
    name = model.get("name", "?")
    return f"{name} ({loaded})" if loaded and loaded != name else str(name)


def render_evaluation(evaluation: dict[str, Any]) -> str:
    """One evaluation: what was compared on what, the metrics table, the verdict."""
    data = evaluation.get("data") or {}
    digest = (data.get("sha256") or "")[:12]
    lines = [
        f"evaluation {evaluation['id']} ({evaluation['status']})",
        f"  A: {_model_label(evaluation['model_a'])}",
        f"  B: {_model_label(evaluation['model_b'])}",
        f"  data: {data.get('name')}, {data.get('rows') or '?'} pairs, sha256 {digest or '?'}",
    ]
    if evaluation["status"] != "succeeded":
        if evaluation.get("error"):
            lines.append(f"  error: {evaluation['error']}")
        return "\n".join(lines)
    a, b = evaluation["metrics_a"], evaluation["metrics_b"]
    differences = evaluation["differences"]
    lines += [
        "",
        f"  {'metric':<10} {'A':>8} {'B':>8} {'B - A':>9}   95% CI (paired bootstrap)",
    ]
    for metric, diff in differences.items():
        mark = " *" if metric == evaluation["primary_metric"] else ""
        lines.append(
            f"  {metric + mark:<10} {a[metric]:>8.4f} {b[metric]:>8.4f} "
            f"{diff['b_minus_a']:>+9.4f}   [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
        )
    lines += [
        "",
        f"  * the verdict's metric; {evaluation['n_resamples']} resamples of the queries, "
        f"seed {evaluation['seed']}",
        f"VERDICT: {evaluation['verdict']} (on {evaluation['primary_metric']})",
    ]
    return "\n".join(lines)


def render_evaluations(evaluations: list[dict[str, Any]]) -> str:
    """Recent evaluations, newest first, one line each."""
    if not evaluations:
        return "no A/B evaluations yet (embedctl compare A B --data pairs.jsonl)"
    lines = ["recent A/B evaluations (differences B - A, 95% CI)"]
    for e in evaluations:
        when = (e.get("created_at") or "")[:19].replace("T", " ")
        head = f"  {when}  {e['id'][:8]}  A={e['model_a']['name']}  B={e['model_b']['name']}"
        rows = (e.get("data") or {}).get("rows")
        if e["status"] == "succeeded":
            metric = e["primary_metric"]
            diff = e["differences"][metric]
            lines.append(
                f"{head}  {rows} pairs  {metric} {diff['b_minus_a']:+.4f} "
                f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]  {e['verdict']}"
            )
        else:
            reason = f": {e['error']}" if e.get("error") else ""
            lines.append(f"{head}  {e['status']}{reason}")
    return "\n".join(lines)
