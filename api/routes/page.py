"""The jobs page at ``/``: fine-tune jobs with their state and loss curves, recent
validation runs, model versions. Rendered on the server (it works without JavaScript);
a few lines of JavaScript poll ``/v1/fine_tuning/jobs`` and each job's checkpoints every
two seconds and redraw the jobs table, so a running job's curve grows live. With a
validation set, the chart also draws the validation metric per epoch (the one that picks
the best epoch: MRR@10 or triplet accuracy, on its own scale) with a dot on the best epoch,
and the table says which epoch was exported and by what metric.

With API keys configured the page needs a key like every data route; a browser gives it
once through ``/login``, which keeps it in an HttpOnly cookie (accepted on GET only). A
project key sees its project's jobs, runs and versions; an admin key every project's, with a
project column, and a usage table: per project, today's and the last 7 days' GPU-seconds
(training, embedding), pairs, tokens and requests, and the bytes it stores.
"""

from __future__ import annotations

import html
import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import Caller, CallerDep, identify
from api.security import COOKIE
from db import repo
from db.models import utcnow
from db.session import session_scope
from workers.serving.model_names import job_fine_tuned_id

router = APIRouter(include_in_schema=False)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin-bottom:2rem}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.succeeded,.passed{color:#17692d}.failed,.error{color:#b00020}.running{color:#8a5a00}.cancelled{color:#666}
svg{background:#f6f6f6}code{font-size:.85em}
"""

SCRIPT = """
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
function scaled(values,w,h){
  const max=Math.max(...values),min=Math.min(...values),span=(max-min)||1;
  const x=i=>(values.length>1? i*w/(values.length-1):w/2).toFixed(1);
  return values.map((v,i)=>`${x(i)},${(h-2-(v-min)/span*(h-4)).toFixed(1)}`);
}
function metricOf(points, r){
  const keys = new Set(points.flatMap(p => Object.keys((p.metrics && p.metrics.eval) || {})));
  return [r && r.selected_by, 'mrr@10', 'triplet_accuracy'].find(k => k && keys.has(k)) || null;
}
function curve(losses, metric, values, bestEpoch){
  if(!losses.length) return '';
  const w=160,h=40,pts=scaled(losses,w,h);
  let extra='';
  const known = values.filter(v => v != null);
  if(metric && known.length === values.length && values.length){
    const mp=scaled(values,w,h);
    extra=`<polyline class="metric" data-metric="${esc(metric)}" data-points="${values.length}" `+
      `data-values="${values.map(v=>Number(v).toFixed(4)).join(',')}" fill="none" stroke="#d08000" `+
      `stroke-width="1.5" stroke-dasharray="3,2" points="${mp.join(' ')}"/>`;
    if(bestEpoch != null && bestEpoch >= 1 && bestEpoch <= values.length){
      const [x,y]=mp[bestEpoch-1].split(',');
      extra+=`<circle class="best" data-epoch="${esc(bestEpoch)}" cx="${x}" cy="${y}" r="3" fill="#d08000"/>`;
    }
  }
  return `<svg class="curve" width="${w}" height="${h}" data-points="${losses.length}">`+
    `<title>train loss (blue)${metric? `, validation ${esc(metric)} (orange, dashed; dot: best epoch)`:''}</title>`+
    `<polyline fill="none" stroke="#3367d6" stroke-width="2" points="${pts.join(' ')}"/>${extra}</svg>`;
}
function best(r){
  if(!r || r.best_epoch == null) return '';
  const v = r.best_value == null ? '' : ` (${esc(r.selected_by)} ${Number(r.best_value).toFixed(4)})`;
  return `<span data-best-epoch="${esc(r.best_epoch)}">${esc(r.best_epoch)}${v}</span>`;
}
async function refresh(){
  try{
    const r = await fetch('/v1/fine_tuning/jobs?limit=20'); if(!r.ok) return;
    const jobs = (await r.json()).data; const rows = [];
    for(const j of jobs){
      const c = await fetch(`/v1/fine_tuning/jobs/${j.id}/checkpoints?limit=1000`);
      const points = c.ok ? (await c.json()).data.slice().reverse() : [];
      const losses = points.map(p => p.metrics.train_loss);
      const metric = metricOf(points, j.result);
      const values = metric ? points.map(p => ((p.metrics.eval || {})[metric] ?? null)) : [];
      const bestEpoch = j.result ? j.result.best_epoch : null;
      const names = JSON.parse(document.body.dataset.names || '{}');
      const project = document.body.dataset.project === '*' ?
        `<td class="project">${esc(names[j.project_id] || j.project_id)}</td>` : '';
      rows.push(`<tr data-job="${esc(j.id)}"><td><code>${esc(j.id)}</code></td>${project}<td>${esc(j.model)}</td>`+
        `<td class="${esc(j.status)}">${esc(j.status)}</td><td>${losses.length}/${j.hyperparameters.n_epochs}</td>`+
        `<td>${losses.length? losses[losses.length-1].toFixed(4):''}</td><td>${curve(losses, metric, values, bestEpoch)}</td>`+
        `<td>${best(j.result)}</td><td><code>${esc(j.fine_tuned_model)}</code></td></tr>`);
    }
    document.getElementById('jobs').innerHTML = rows.join('');
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }catch(e){}
}
setInterval(refresh, 2000); refresh();
"""


CHART_W, CHART_H = 160, 40


def _scaled(values: list[float]) -> list[tuple[float, float]]:
    """Chart coordinates, each series on its own scale (a loss and an accuracy share no unit)."""
    top, low = max(values), min(values)
    span = (top - low) or 1.0
    step = CHART_W / (len(values) - 1) if len(values) > 1 else 0
    return [
        (
            i * step if len(values) > 1 else CHART_W / 2,
            CHART_H - 2 - (v - low) / span * (CHART_H - 4),
        )
        for i, v in enumerate(values)
    ]


def validation_metric(
    evals: list[dict[str, Any] | None], result: dict[str, Any] | None
) -> str | None:
    """The per-epoch validation metric to chart: the one that chose the best epoch, else the
    one :mod:`embedding.training.epoch_selection` would use; None without a validation set."""
    keys = {k for e in evals for k in (e or {})}
    chosen = (result or {}).get("selected_by")
    return next((k for k in (chosen, "mrr@10", "triplet_accuracy") if k and k in keys), None)


def _curve(
    losses: list[float],
    metric: str | None = None,
    values: list[float | None] | None = None,
    best_epoch: int | None = None,
) -> str:
    """The loss per epoch; with a validation set, its metric per epoch beside it (dashed) and
    a dot on the best epoch, the one whose weights were exported."""
    if not losses:
        return ""
    e = html.escape
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in _scaled(losses))
    extra = ""
    values = values or []
    if metric and values and all(v is not None for v in values):
        coords = _scaled([float(v) for v in values])  # type: ignore[arg-type]
        shown = ",".join(f"{float(v):.4f}" for v in values)  # type: ignore[arg-type]
        extra = (
            f'<polyline class="metric" data-metric="{e(metric)}" data-points="{len(values)}" '
            f'data-values="{shown}" fill="none" stroke="#d08000" stroke-width="1.5" '
            f'stroke-dasharray="3,2" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}"/>'
        )
        if best_epoch is not None and 1 <= best_epoch <= len(coords):
            x, y = coords[best_epoch - 1]
            extra += (
                f'<circle class="best" data-epoch="{best_epoch}" cx="{x:.1f}" cy="{y:.1f}" '
                'r="3" fill="#d08000"/>'
            )
    title = "train loss (blue)" + (
        f", validation {e(metric)} (orange, dashed; dot: best epoch)" if extra else ""
    )
    return (
        f'<svg class="curve" width="{CHART_W}" height="{CHART_H}" data-points="{len(losses)}">'
        f"<title>{title}</title>"
        f'<polyline fill="none" stroke="#3367d6" stroke-width="2" points="{points}"/>{extra}</svg>'
    )


def _job_row(job: Any, project: str | None = None) -> str:
    e = html.escape
    epochs = sorted(job.epochs, key=lambda m: m.epoch)
    losses = [m.train_loss for m in epochs]
    metric = validation_metric([m.eval for m in epochs], job.result)
    values = [(m.eval or {}).get(metric) for m in epochs] if metric else []
    best = (job.result or {}).get("best_epoch")
    total = int((job.params or {}).get("epochs", 0))
    ft = job_fine_tuned_id(job) if job.status == "succeeded" and job.model_version_id else ""
    project_cell = "" if project is None else f"<td class='project'>{e(project)}</td>"
    return (
        f'<tr data-job="{e(str(job.id))}"><td><code>{e(str(job.id))}</code></td>{project_cell}'
        f"<td>{e(job.model)}</td><td class='{e(job.status)}'>{e(job.status)}</td>"
        f"<td>{len(losses)}/{total}</td><td>{f'{losses[-1]:.4f}' if losses else ''}</td>"
        f"<td>{_curve(losses, metric, values, best)}</td><td>{_best_epoch(job.result)}</td><td><code>{e(ft)}</code></td></tr>"
    )


def _best_epoch(result: dict[str, Any] | None) -> str:
    """The epoch whose weights won on the validation set, and by what (empty without one)."""
    if not result or result.get("best_epoch") is None:
        return ""
    e = html.escape
    value = result.get("best_value")
    by = f" ({e(str(result.get('selected_by')))} {value:.4f})" if value is not None else ""
    epoch = e(str(result["best_epoch"]))
    return f'<span data-best-epoch="{epoch}">{epoch}{by}</span>'


def _run_row(run: Any) -> str:
    e = html.escape
    checks = ", ".join(f"{c.name}: {c.status}" for c in run.checks)
    return (
        f"<tr><td><code>{e(str(run.id))}</code></td><td class='{e(run.status)}'>{e(run.status)}</td>"
        f"<td>{e(', '.join(run.models))}</td><td>{e(run.verdict or '')}</td><td>{e(checks)}</td>"
        f"<td>{e(run.started_at.isoformat(timespec='seconds'))}</td></tr>"
    )


def _version_row(version: Any) -> str:
    e = html.escape
    return (
        f"<tr><td>{e(version.name)}</td><td>{version.version}</td><td>{e(version.base_model)}</td>"
        f"<td><code>{e(version.weights_sha256[:12])}</code></td>"
        f"<td>{e(version.created_at.isoformat(timespec='seconds'))}</td></tr>"
    )


USAGE_COLUMNS = (
    ("gpu_seconds_training", "GPU-s training"),
    ("gpu_seconds_embedding", "GPU-s embedding"),
    ("pairs_trained", "pairs"),
    ("tokens_embedded", "tokens"),
    ("embedding_requests", "requests"),
)


def _usage_table(session: Any, names: dict[str, str]) -> str:
    """Admin keys: per project, today's usage and the last 7 days' (today included), and
    the bytes it stores now."""
    e = html.escape
    today = utcnow().date()
    day = repo.usage.totals(session, since=today)
    week = repo.usage.totals(session, since=today - timedelta(days=6))
    stored = repo.storage.stored_bytes_by_project(session)
    rows = []
    for project_id in sorted(set(names) | set(week) | set(stored), key=lambda p: names.get(p, p)):
        cells = []
        for counter, _ in USAGE_COLUMNS:
            for span, totals in (("today", day), ("7d", week)):
                value = totals.get(project_id, {}).get(counter, 0.0)
                shown = f"{value:.1f}" if counter.startswith("gpu_") else f"{int(value)}"
                cells.append(f'<td data-counter="{counter}" data-span="{span}">{shown}</td>')
        rows.append(
            f'<tr data-project="{e(project_id)}"><td>{e(names.get(project_id, project_id))}</td>'
            f'{"".join(cells)}<td data-counter="stored_bytes">{stored.get(project_id, 0)}</td></tr>'
        )
    head = "".join(
        f"<th>{e(label)} today</th><th>{e(label)} 7 days</th>" for _, label in USAGE_COLUMNS
    )
    return (
        "<h2>Usage</h2>\n<table><thead><tr><th>project</th>"
        f'{head}<th>stored bytes</th></tr></thead>\n<tbody id="usage">{"".join(rows)}</tbody>'
        "</table>\n"
    )


def _whose(caller: Caller, names: dict[str, str]) -> str:
    """Whose page this is: the key's project, or every project for an admin."""
    if caller.project_id is None:
        return "all projects"
    return f"project {names.get(caller.project_id, caller.project_id)}"


@router.get("/", response_class=HTMLResponse)
def jobs_page(caller: CallerDep) -> HTMLResponse:
    scope = caller.scope
    every_project = caller.project_id is None
    with session_scope() as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        jobs = "".join(
            _job_row(j, names.get(j.project_id, j.project_id) if every_project else None)
            for j in repo.jobs.list_jobs_page(session, limit=20, scope=scope)
        )
        runs = "".join(
            _run_row(r)
            for r in repo.validations.list_validation_runs(session, limit=10, scope=scope)
        )
        versions = "".join(
            _version_row(v)
            for v in repo.versions.list_model_versions(session, limit=50, scope=scope)
        )
        usage = _usage_table(session, names) if every_project else ""
    project_head = "<th>project</th>" if every_project else ""
    whose = html.escape(_whose(caller, names))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>embedding jobs</title>
<style>{STYLE}</style></head><body data-project="{html.escape(caller.project_id or "*")}"
data-names="{html.escape(json.dumps(names))}">
<h1>Embedding service</h1>
<p id="whose">Showing {whose}.</p>
<h2>Fine-tuning jobs</h2>
<table><thead><tr><th>job</th>{project_head}<th>model</th><th>state</th><th>epochs</th><th>loss</th>
<th>loss curve</th><th>best epoch</th><th>fine-tuned model</th></tr></thead>
<tbody id="jobs">{jobs}</tbody></table>
<h2>Recent validation runs</h2>
<table><thead><tr><th>run</th><th>status</th><th>models</th><th>verdict</th><th>checks</th><th>started</th></tr></thead>
<tbody id="runs">{runs}</tbody></table>
<h2>Model versions</h2>
<table><thead><tr><th>name</th><th>version</th><th>base</th><th>weights</th><th>registered</th></tr></thead>
<tbody id="versions">{versions}</tbody></table>
{usage}<script>{SCRIPT}</script></body></html>"""
    return HTMLResponse(body)


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html><body><form method="post" action="/login">'
        '<label>API key <input type="password" name="key"></label> <button>Open</button>'
        "</form></body></html>"
    )


@router.post("/login")
def login(key: Annotated[str, Form(max_length=500)]) -> RedirectResponse:
    identify(key)  # a wrong, revoked or expired key is the same 401 as on every route
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response
