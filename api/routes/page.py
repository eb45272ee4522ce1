"""The jobs page at ``/``: fine-tune jobs with their state and loss curves, recent
validation runs, model versions. Rendered on the server (it works without JavaScript);
a few lines of JavaScript poll ``/v1/fine_tuning/jobs`` and each job's checkpoints every
two seconds and redraw the jobs table, so a running job's curve grows live.

With API keys configured the page needs a key like every data route; a browser gives it
once through ``/login``, which keeps it in an HttpOnly cookie (accepted on GET only).
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse

from api.errors import APIError
from api.security import COOKIE, configured_keys, key_is_valid, require_api_key
from db import repo
from db.session import session_scope
from workers.model_names import job_fine_tuned_id

router = APIRouter(include_in_schema=False)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin-bottom:2rem}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.succeeded,.passed{color:#17692d}.failed,.error{color:#b00020}.running{color:#8a5a00}.cancelled{color:#666}
svg{background:#f6f6f6}code{font-size:.85em}
"""

SCRIPT = """
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
function curve(losses){
  if(!losses.length) return '';
  const w=160,h=40,max=Math.max(...losses),min=Math.min(...losses),span=(max-min)||1;
  const pts=losses.map((l,i)=>`${losses.length>1? i*w/(losses.length-1):w/2},${h-2-(l-min)/span*(h-4)}`).join(' ');
  return `<svg class="curve" width="${w}" height="${h}" data-points="${losses.length}">`+
    `<polyline fill="none" stroke="#3367d6" stroke-width="2" points="${pts}"/></svg>`;
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
      rows.push(`<tr data-job="${esc(j.id)}"><td><code>${esc(j.id)}</code></td><td>${esc(j.model)}</td>`+
        `<td class="${esc(j.status)}">${esc(j.status)}</td><td>${losses.length}/${j.hyperparameters.n_epochs}</td>`+
        `<td>${losses.length? losses[losses.length-1].toFixed(4):''}</td><td>${curve(losses)}</td>`+
        `<td>${best(j.result)}</td><td><code>${esc(j.fine_tuned_model)}</code></td></tr>`);
    }
    document.getElementById('jobs').innerHTML = rows.join('');
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }catch(e){}
}
setInterval(refresh, 2000); refresh();
"""


def _curve(losses: list[float]) -> str:
    if not losses:
        return ""
    w, h = 160, 40
    top, low = max(losses), min(losses)
    span = (top - low) or 1.0
    step = w / (len(losses) - 1) if len(losses) > 1 else 0
    points = " ".join(
        f"{i * step if len(losses) > 1 else w / 2:.1f},{h - 2 - (v - low) / span * (h - 4):.1f}"
        for i, v in enumerate(losses)
    )
    return (
        f'<svg class="curve" width="{w}" height="{h}" data-points="{len(losses)}">'
        f'<polyline fill="none" stroke="#3367d6" stroke-width="2" points="{points}"/></svg>'
    )


def _job_row(job: Any) -> str:
    e = html.escape
    losses = [m.train_loss for m in sorted(job.epochs, key=lambda m: m.epoch)]
    total = int((job.params or {}).get("epochs", 0))
    ft = job_fine_tuned_id(job) if job.status == "succeeded" and job.model_version_id else ""
    return (
        f'<tr data-job="{e(str(job.id))}"><td><code>{e(str(job.id))}</code></td>'
        f"<td>{e(job.model)}</td><td class='{e(job.status)}'>{e(job.status)}</td>"
        f"<td>{len(losses)}/{total}</td><td>{f'{losses[-1]:.4f}' if losses else ''}</td>"
        f"<td>{_curve(losses)}</td><td>{_best_epoch(job.result)}</td><td><code>{e(ft)}</code></td></tr>"
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


@router.get("/", response_class=HTMLResponse, dependencies=[Depends(require_api_key)])
def jobs_page() -> HTMLResponse:
    with session_scope() as session:
        jobs = "".join(_job_row(j) for j in repo.list_jobs_page(session, limit=20))
        runs = "".join(_run_row(r) for r in repo.list_validation_runs(session, limit=10))
        versions = "".join(_version_row(v) for v in repo.list_model_versions(session, limit=50))
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>embedding jobs</title>
<style>{STYLE}</style></head><body>
<h1>Embedding service</h1>
<h2>Fine-tuning jobs</h2>
<table><thead><tr><th>job</th><th>model</th><th>state</th><th>epochs</th><th>loss</th>
<th>loss curve</th><th>best epoch</th><th>fine-tuned model</th></tr></thead>
<tbody id="jobs">{jobs}</tbody></table>
<h2>Recent validation runs</h2>
<table><thead><tr><th>run</th><th>status</th><th>models</th><th>verdict</th><th>checks</th><th>started</th></tr></thead>
<tbody id="runs">{runs}</tbody></table>
<h2>Model versions</h2>
<table><thead><tr><th>name</th><th>version</th><th>base</th><th>weights</th><th>registered</th></tr></thead>
<tbody id="versions">{versions}</tbody></table>
<script>{SCRIPT}</script></body></html>"""
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
    keys = configured_keys()
    if keys and not key_is_valid(key, keys):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response
