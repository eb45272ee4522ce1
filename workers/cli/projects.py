"""``embedctl projects|keys|audit``: the operator's side of projects and API keys.

An operator creates a project for a team and hands the team a key::

    embedctl projects create team-search
    embedctl keys create --project team-search --name ci      # prints the key, once

The key's secret is printed once and stored only as a hash; ``keys list`` shows its
redacted form. These commands talk to the database directly (an operator's machine), and
every change they make is in the audit list with the actor ``cli``.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import Any

ACTOR = "cli"
# set-limits' flags -> what they limit (the column is the flag with underscores; storage is
# given in MB and kept in bytes).
LIMIT_FLAGS = {
    "max-running-jobs": "fine-tunes running at once (more wait, queued)",
    "max-queued-jobs": "fine-tunes waiting at once (more are refused: 429)",
    "embeddings-rpm": "embedding requests per minute",
    "embeddings-tpm": "embedding tokens per minute",
    "max-storage-mb": "stored files, datasets and models, MB",
}
MB = 1_000_000


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number > 0")
    return value


def _quota(text: str) -> int | str:
    """A whole number > 0, or ``none`` (no limit)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number > 0, or none") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number > 0, or none")
    return value


_DURATION = re.compile(r"(\d+)\s*([dhm]?)")
_UNITS = {"d": "days", "": "days", "h": "hours", "m": "minutes"}


def add_commands(sub: argparse._SubParsersAction) -> None:
    projects = sub.add_parser("projects", help="projects: create, list, show, archive")
    psub = projects.add_subparsers(dest="projects_command", metavar="ACTION", required=True)
    p = psub.add_parser("create", help="a new project (a team's walled space)")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the project as JSON")
    p.set_defaults(func=cmd_project_create)
    p = psub.add_parser("list", help="every project, with its live keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_list)
    p = psub.add_parser("show", help="a project: its id, status, keys and jobs")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project_show)
    p = psub.add_parser(
        "archive", help="archive a project: its keys stop working (refused while jobs run)"
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_project_archive)
    p = psub.add_parser(
        "set-limits",
        help="a project's share of the GPU fleet and its quotas (none: no limit)",
    )
    p.add_argument("name")
    p.add_argument("--weight", type=_number, default=None, help="its share against others' (1)")
    for flag, what in LIMIT_FLAGS.items():
        p.add_argument(f"--{flag}", type=_quota, default=None, help=what)
    p.set_defaults(func=cmd_project_set_limits)

    keys = sub.add_parser("keys", help="API keys: create, list, revoke")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("create", help="a new API key, printed once")
    p.add_argument("--project", default=None, help="the key's project (not for --admin)")
    p.add_argument("--name", required=True, help="what the key is for (e.g. the service)")
    p.add_argument("--read-only", action="store_true", help="GET requests only")
    p.add_argument("--admin", action="store_true", help="an admin key: manages every project")
    p.add_argument("--expires-in", default=None, help="e.g. 90d, 12h, 30m (default: never)")
    p.add_argument("--json", action="store_true", help="print {id, project, key, ...} as JSON")
    p.set_defaults(func=cmd_key_create)
    p = ksub.add_parser("list", help="keys (redacted), of one project or all")
    p.add_argument("--project", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_key_list)
    p = ksub.add_parser("revoke", help="revoke a key at once, on every API process")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_key_revoke)

    p = sub.add_parser("usage", help="what each project used, per day: GPU-seconds, pairs, tokens")
    p.add_argument("--project", default=None)
    p.add_argument("--since", default=None, help="YYYY-MM-DD (default: the last 30 days)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("audit", help="who changed what: every state-changing call, newest first")
    p.add_argument("--project", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or a bare number of days; positive."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"--expires-in {text!r}: give a positive duration such as 90d, 12h, 30m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _project_dict(row: Any, live_keys: int | None = None) -> dict[str, Any]:
    out = {
        "id": row.id,
        "name": row.name,
        "status": "archived" if row.archived_at else "active",
        "created_at": _iso(row.created_at),
        "archived_at": _iso(row.archived_at),
    }
    if live_keys is not None:
        out["live_keys"] = live_keys
    return out


def _key_dict(row: Any, names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "project": names.get(row.project_id or ""),
        "project_id": row.project_id,
        "redacted": row.redacted_value,
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "last_used_at": _iso(row.last_used_at),
        "revoked_at": _iso(row.revoked_at),
    }


def _audit(session: Any, action: str, object_id: str, project_id: str | None, **data: Any) -> None:
    from db import repo

    repo.audit.record(
        session,
        actor=ACTOR,
        action=action,
        object_id=object_id,
        project_id=project_id,
        data=data or None,
    )


# ------------------------------------------------------------------ projects
def cmd_project_create(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        row = repo.projects.create_project(session, args.name)
        _audit(session, "project.create", row.id, row.id, name=row.name)
        shown = _project_dict(row)
    if args.json:
        print(json.dumps(shown))
    else:
        print(f"created project {shown['name']} ({shown['id']})")
        print(f"next: embedctl keys create --project {shown['name']} --name SERVICE")
    return 0


def cmd_project_list(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        counts = repo.projects.key_counts(session)
        rows = [_project_dict(p, counts.get(p.id, 0)) for p in repo.projects.list_projects(session)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<24} {'id':<30} {'status':<9} keys")
    for row in rows:
        print(f"{row['name']:<24} {row['id']:<30} {row['status']:<9} {row['live_keys']}")
    return 0


def cmd_project_set_limits(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    given: dict[str, Any] = {}
    if args.weight is not None:
        given["weight"] = args.weight
    for flag in LIMIT_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is None:
            continue
        value = None if value == "none" else value
        if flag == "max-storage-mb":
            given["max_storage_bytes"] = None if value is None else value * MB
        else:
            given[flag.replace("-", "_")] = value
    if not given:
        raise ValueError(
            "give at least one of --weight, " + ", ".join(f"--{f}" for f in LIMIT_FLAGS)
        )
    ensure_schema()
    with session_scope() as session:
        row = repo.projects.set_limits(session, args.name, **given)
        _audit(session, "project.limits", row.id, row.id, **given)
        print(f"project {row.name}: " + _limits_line(repo.projects.limits_of(row)))
    return 0


def _limits_line(limits: dict[str, Any]) -> str:
    def shown(name: str, value: Any) -> str:
        if value is None:
            return f"{name} none"
        if name == "max_storage_bytes":
            return f"max_storage_mb {value / MB:g}"
        return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"

    return ", ".join(shown(n, v) for n, v in limits.items())


def _use(session: Any, project_id: str) -> dict[str, Any]:
    """What a project holds and used: jobs by status, stored bytes, today's and the last 30
    days' usage."""
    from datetime import timedelta

    from db import repo
    from db.models import utcnow

    scope = repo.scope.project(project_id)
    jobs: dict[str, int] = {}
    for job in repo.jobs.list_jobs(session, limit=100_000, scope=scope):
        jobs[job.status] = jobs.get(job.status, 0) + 1
    today = utcnow().date()
    rows = repo.usage.daily(session, project_id, since=today - timedelta(days=29))
    sums = {c: sum(getattr(r, c) for r in rows) for c in repo.usage.COUNTERS}
    return {
        "jobs": jobs,
        "stored_bytes": repo.storage.stored_bytes(session, project_id),
        "last_30_days": sums,
    }


def cmd_project_show(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        project = repo.projects.require_project(session, args.name)
        keys = repo.keys.list_keys(session, project_id=project.id)
        use = _use(session, project.id)
        jobs = use["jobs"]
        shown = {
            **_project_dict(project, sum(1 for k in keys if k.revoked_at is None)),
            "limits": repo.projects.limits_of(project),
            "keys": [_key_dict(k, {project.id: project.name}) for k in keys],
            **use,
        }
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    print(f"project {shown['name']} ({shown['id']}), {shown['status']}")
    print(
        f"  created {shown['created_at']}"
        + (f", archived {shown['archived_at']}" if shown["archived_at"] else "")
    )
    print("  limits: " + _limits_line(shown["limits"]))
    print("  jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(jobs.items())) or "none"))
    used = shown["last_30_days"]
    print(
        f"  used (30 days): {used['gpu_seconds_training']:.1f} GPU-s training, "
        f"{used['gpu_seconds_embedding']:.1f} GPU-s embedding, {used['pairs_trained']:.0f} "
        f"pairs trained, {used['tokens_embedded']:.0f} tokens in "
        f"{used['embedding_requests']:.0f} embedding requests"
    )
    print(f"  stored: {shown['stored_bytes'] / MB:.1f} MB (files, datasets, models)")
    print(f"  keys: {shown['live_keys']} live")
    for key in shown["keys"]:
        state = "revoked" if key["revoked_at"] else key["role"]
        print(f"    {key['id']}  {key['name']:<20} {key['redacted']:<22} {state}")
    return 0


def cmd_project_archive(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        row = repo.projects.archive_project(session, args.name)
        _audit(session, "project.archive", row.id, row.id)
        print(f"archived project {row.name} ({row.id}): its keys no longer work")
    return 0


# ------------------------------------------------------------------ keys
def cmd_key_create(args: argparse.Namespace) -> int:
    from db import repo
    from db.models import utcnow
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    if args.admin == (args.project is not None):
        raise ValueError("give --project NAME for a project key, or --admin (and no --project)")
    if args.admin and args.read_only:
        raise ValueError("--read-only is for project keys; an admin key manages projects")
    expires = utcnow() + parse_duration(args.expires_in) if args.expires_in else None
    ensure_schema()
    with session_scope() as session:
        project = None if args.admin else repo.projects.require_project(session, args.project)
        role = "admin" if args.admin else "read_only" if args.read_only else "member"
        issued = repo.keys.issue_key(
            session, name=args.name, role=role, project=project, expires_at=expires
        )
        project_id = project.id if project is not None else None
        _audit(session, "api_key.create", issued.key.id, project_id, role=role)
        shown = {
            **_key_dict(issued.key, {project_id: project.name} if project else {}),
            "key": issued.secret,
        }
    if args.json:
        print(json.dumps(shown))
        return 0
    whose = f"project {shown['project']}" if shown["project"] else "every project (admin)"
    print(f"created key {shown['id']} ({shown['role']}) for {whose}")
    print(f"key: {shown['key']}")
    print("this is the only time the key is shown: hand it over now (e.g. as OPENAI_API_KEY)")
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        project_id = (
            repo.projects.require_project(session, args.project).id if args.project else None
        )
        rows = [_key_dict(k, names) for k in repo.keys.list_keys(session, project_id=project_id)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':<28} {'project':<20} {'name':<20} {'role':<9} {'state':<8} last used")
    for row in rows:
        state = "revoked" if row["revoked_at"] else "live"
        print(
            f"{row['id']:<28} {row['project'] or '(admin)':<20} {row['name']:<20} "
            f"{row['role']:<9} {state:<8} {row['last_used_at'] or '-'}"
        )
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    ensure_schema()
    with session_scope() as session:
        row = repo.keys.revoke_key(session, args.key_id)
        _audit(session, "api_key.revoke", row.id, row.project_id)
        print(f"revoked key {row.id} ({row.name})")
    return 0


# ------------------------------------------------------------------ usage
def cmd_usage(args: argparse.Namespace) -> int:
    from datetime import date, timedelta

    from db import repo
    from db.models import utcnow
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    try:
        since = (
            date.fromisoformat(args.since) if args.since else utcnow().date() - timedelta(days=29)
        )
    except ValueError:
        raise ValueError(f"--since {args.since!r}: give a date, YYYY-MM-DD") from None
    ensure_schema()
    with session_scope() as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        project_id = (
            repo.projects.require_project(session, args.project).id if args.project else None
        )
        rows = [
            {**repo.usage.as_dict(r), "project": names.get(r.project_id, r.project_id)}
            for r in repo.usage.daily(session, project_id, since=since)
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'day':<11} {'project':<20} {'train GPU-s':>12} {'embed GPU-s':>12} {'pairs':>10} "
        f"{'tokens':>12} {'requests':>9}"
    )
    for row in rows:
        print(
            f"{row['day']:<11} {row['project']:<20} {row['gpu_seconds_training']:>12.1f} "
            f"{row['gpu_seconds_embedding']:>12.1f} {row['pairs_trained']:>10} "
            f"{row['tokens_embedded']:>12} {row['embedding_requests']:>9}"
        )
    if not rows:
        print(f"(no usage since {since.isoformat()})")
    return 0


# ------------------------------------------------------------------ audit
def cmd_audit(args: argparse.Namespace) -> int:
    from db import repo
    from db.session import session_scope
    from workers.cli.db import ensure_schema

    if args.limit < 1:
        raise ValueError("--limit must be at least 1")
    ensure_schema()
    with session_scope() as session:
        names = {p.id: p.name for p in repo.projects.list_projects(session)}
        project_id = (
            repo.projects.require_project(session, args.project).id if args.project else None
        )
        rows = [
            {
                "at": _iso(e.at),
                "actor": e.actor,
                "action": e.action,
                "object": e.object_id,
                "project": names.get(e.project_id or "", e.project_id),
                **({"data": e.data} if e.data else {}),
            }
            for e in repo.audit.list_events(session, project_id=project_id, limit=args.limit)
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(
            f"{row['at']}  {row['actor']:<28} {row['action']:<24} {row['object']}"
            f"  {row['project'] or ''}"
        )
    return 0
