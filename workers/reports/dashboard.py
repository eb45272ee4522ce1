"""The dashboard behind ``embedctl report``: PNG charts and an ``index.html`` that shows them.

Four views of what the database holds: loss curves per fine-tune job, benchmark trends
per model, the latest validation run's criteria, and the recent A/B evaluations (a table).
Static files only, so the page can be archived as a CI artifact and opened anywhere.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def _collect(jobs: int, evaluations: int) -> dict[str, Any]:
    from db import repo
    from db.session import session_scope
    from workers.client import job_to_dict
    from workers.jobs.evaluation_run import recent
    from workers.jobs.validation_run import read_run

    with session_scope() as session:
        job_rows = [
            job_to_dict(j)
            for j in repo.jobs.list_jobs(session, limit=jobs, scope=repo.ALL_PROJECTS)
        ]
        bench = [
            {
                "model": r.model,
                "precision": r.precision,
                "created_at": r.created_at,
                "p50": r.latency_p50_ms,
                "p95": r.latency_p95_ms,
                "throughput": r.throughput_per_s,
                "grad": r.grad_step_ms,
            }
            for r in reversed(repo.benchmarks.benchmark_history(session, limit=500))
        ]
        latest = repo.validations.latest_validation_run(session, scope=repo.ALL_PROJECTS)
        latest_id = str(latest.id) if latest else None
    return {
        "jobs": [j for j in job_rows if j["epochs"]],
        "bench": bench,
        "validation": read_run(latest_id) if latest_id else None,
        "evaluations": recent(evaluations, scope=repo.ALL_PROJECTS) if evaluations > 0 else [],
    }


def write_report(out: Path, jobs: int = 10, evaluations: int = 10) -> Path:
    """Write the three charts and ``index.html`` into ``out``; return the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data = _collect(jobs, evaluations)
    sections: list[str] = []

    # Loss curves, one line per job.
    fig, ax = plt.subplots(figsize=(7, 4))
    for job in data["jobs"]:
        epochs = [e["epoch"] for e in job["epochs"]]
        ax.plot(
            epochs,
            [e["train_loss"] for e in job["epochs"]],
            marker="o",
            label=f"{job['id'][:8]} {job['model']} ({job['status']})",
        )
    ax.set(title="Fine-tune loss per epoch", xlabel="epoch", ylabel="mean train loss")
    if data["jobs"]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no fine-tune jobs yet", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)
    sections.append(_img("Loss curves per fine-tune job", "loss_curves.png"))

    # Benchmark trends per model.
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    models = sorted({b["model"] for b in data["bench"]})
    for model in models:
        rows = [b for b in data["bench"] if b["model"] == model]
        runs = list(range(1, len(rows) + 1))
        left.plot(runs, [r["p50"] for r in rows], marker="o", label=f"{model} p50")
        left.plot(runs, [r["p95"] for r in rows], marker="x", linestyle="--", label=f"{model} p95")
        right.plot(runs, [r["throughput"] for r in rows], marker="o", label=model)
    left.set(title="Single-text latency", xlabel="benchmark run", ylabel="ms")
    right.set(title="Batch throughput", xlabel="benchmark run", ylabel="texts/s")
    for axis in (left, right):
        if models:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "no benchmark results yet", ha="center", transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(out / "benchmark_trends.png", dpi=100)
    plt.close(fig)
    sections.append(_img("Benchmark trends", "benchmark_trends.png"))

    # Latest validation run: one bar per check, criteria passed out of total.
    run = data["validation"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if run:
        names = [c["name"] for c in run["checks"]]
        passed = [sum(k["passed"] for k in c["criteria"]) for c in run["checks"]]
        total = [len(c["criteria"]) for c in run["checks"]]
        colors = ["tab:green" if c["status"] == "passed" else "tab:red" for c in run["checks"]]
        ax.barh(names, total, color="lightgray", label="criteria")
        ax.barh(names, passed, color=colors, label="passed")
        ax.set(title=f"Latest validation run: {run['status']}", xlabel="criteria passed")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no validation runs yet", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=100)
    plt.close(fig)
    detail = ""
    if run:
        rows = "".join(
            f"<tr><td>{html.escape(c['name'])}</td><td>{html.escape(k['name'])}</td>"
            f"<td>{html.escape(str(k['threshold']))}</td><td>{html.escape(str(k['actual']))}</td>"
            f"<td class={'ok' if k['passed'] else 'bad'}>{'pass' if k['passed'] else 'FAIL'}</td></tr>"
            for c in run["checks"]
            for k in c["criteria"]
        )
        detail = (
            f"<p>run {html.escape(run['run_id'])}: <b>{html.escape(run['status'])}</b> — "
            f"{html.escape(run['verdict'] or '')}</p><table><tr><th>check</th><th>criterion</th>"
            f"<th>threshold</th><th>actual</th><th></th></tr>{rows}</table>"
        )
    sections.append(_img("Latest validation run", "validation.png") + detail)
    sections.append(_evaluations_table(data["evaluations"]))

    index = out / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Embedding report</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%;border:1px solid #ddd}"
        "td,th{padding:2px 8px;text-align:left}.ok{color:green}.bad{color:red}</style></head><body>"
        "<h1>Embedding infrastructure report</h1>"
        + "".join(sections)
        # Marks how many images really loaded (read by the headless-browser test and by people).
        + "<script>window.addEventListener('load',()=>{document.body.dataset.imagesLoaded="
        "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});</script>"
        + "</body></html>",
        encoding="utf-8",
    )
    return index


def _evaluations_table(evaluations: list[dict[str, Any]]) -> str:
    """Recent A/B evaluations: the primary metric's difference B - A, its CI, the verdict."""
    title = "<h2>Recent A/B evaluations (B - A, 95% CI)</h2>"
    if not evaluations:
        return title + "<p>no A/B evaluations yet</p>"
    rows = []
    for e in evaluations:
        cells = [
            (e.get("created_at") or "")[:19].replace("T", " "),
            e["model_a"]["name"],
            e["model_b"]["name"],
            str((e.get("data") or {}).get("rows") or ""),
        ]
        if e["status"] == "succeeded":
            metric = e["primary_metric"]
            diff = e["differences"][metric]
            cells += [
                f"{metric} {e['metrics_a'][metric]:.4f} → {e['metrics_b'][metric]:.4f}",
                f"{diff['b_minus_a']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]",
                e["verdict"],
            ]
        else:
            cells += ["", "", f"{e['status']}: {e.get('error') or ''}"]
        rows.append(
            f"<tr data-evaluation='{html.escape(e['id'])}'>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    return (
        title + "<table><tr><th>created</th><th>A</th><th>B</th><th>pairs</th><th>A → B</th>"
        "<th>B - A [CI]</th><th>verdict</th></tr>" + "".join(rows) + "</table>"
    )


def _img(title: str, name: str) -> str:
    return f"<h2>{html.escape(title)}</h2><img src='{name}' alt='{html.escape(title)}'>"
