"""A fine-tuning dataset built from a codebase, as a job: the ``embedding.build_dataset`` task.

Other services hand over a folder under the model roots (``EMBEDDING_MODEL_ROOTS``: a
payload names paths, so they are confined as every model and dataset path is) or a
repository archive (zip or tar) that the API stored. The task builds code-search pairs
(``embedding.data.code_pairs``) and registers ``train.jsonl`` and ``eval.jsonl`` as ``fine-tune``
files, the ids that ``fine_tuning.jobs.create(training_file=..., validation_file=...)``
takes.

An archive is untrusted: every member is checked before a byte is written (no absolute
path, no ``..``, no link or device; at most ``MAX_MEMBERS`` members and ``MAX_UNPACKED_BYTES``
unpacked, counted as written, not as the headers claim), and it is unpacked into a
temporary folder that is removed whatever happens. A refused request leaves no file and
no row behind: the two files are written and registered in one transaction, or neither.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from core.config import get_settings

MAX_MEMBERS = 100_000
MAX_UNPACKED_BYTES = 1 << 30
CHUNK = 1 << 20


class DatasetBuildError(ValueError):
    """A request that cannot be built: ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, code: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.param = param

    def as_dict(self) -> dict[str, Any]:
        return {"message": str(self), "code": self.code, "status": self.status, "param": self.param}


def build_dataset(
    folder: str | None = None,
    archive: str | None = None,
    eval_share: float = 0.1,
    project: str | None = None,
) -> dict[str, Any]:
    """Build and register, as files of ``project`` (name or id; default ``default``);
    ``{"training_file", "validation_file", "report"}`` (file rows as dicts;
    ``validation_file`` None when no file fell to eval). Raises :class:`DatasetBuildError`
    for bad input, with nothing left behind."""
    from workers.schemas import PayloadError
    from workers.tenancy import project_id_of

    try:
        project_id = project_id_of(project)
    except PayloadError as exc:
        raise DatasetBuildError(str(exc), "invalid_value", param="project") from None
    if (folder is None) == (archive is None):
        raise DatasetBuildError(
            "Give a folder or an archive, not both or neither.", "invalid_value"
        )
    if not 0.0 <= float(eval_share) < 1.0:
        raise DatasetBuildError(
            f"eval_share must be in [0, 1), got {eval_share}.", "invalid_value", param="eval_share"
        )
    if folder is not None:
        root = _confined(folder, "folder")
        if not root.is_dir():
            raise DatasetBuildError(
                f"Folder {folder!r} does not exist or is not a folder.",
                "folder_not_found",
                404,
                "folder",
            )
        name = Path(folder).name or "folder"
        return _build_and_register(root, name, float(eval_share), project_id)
    path = _confined(archive, "archive")  # type: ignore[arg-type]
    with unpacked(path) as root:
        return _build_and_register(root, "archive", float(eval_share), project_id)


def _confined(path: str, param: str) -> Path:
    from embedding.models.hub import PathNotAllowed, ensure_under_roots

    try:
        return ensure_under_roots(path, get_settings().model_roots, what=param)
    except PathNotAllowed as exc:
        raise DatasetBuildError(str(exc), "path_not_allowed", 403, param) from None
    except (ValueError, OSError) as exc:  # a NUL byte, a name too long: no such folder
        raise DatasetBuildError(
            f"{param} {path!r} is not a usable path ({exc}).", "invalid_value", 400, param
        ) from None


# ------------------------------------------------------------------ archives
@contextmanager
def unpacked(archive: Path) -> Iterator[Path]:
    """The archive checked whole, then unpacked into a temporary folder (removed after)."""
    if zipfile.is_zipfile(archive):
        members = _zip_members(archive)
    elif tarfile.is_tarfile(archive):
        members = _tar_members(archive)
    else:
        raise DatasetBuildError(
            "The archive is neither a zip nor a tar file.", "invalid_archive", param="archive"
        )
    scratch = Path(get_settings().artifacts_dir).resolve() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix="dataset-", dir=scratch))
    try:
        _extract(archive, members, dest)
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DatasetBuildError(
            f"Archive member {name!r} leaves the archive's folder: refused.",
            "unsafe_archive",
            param="archive",
        )
    return path


def _check_count(count: int) -> None:
    if count > MAX_MEMBERS:
        raise DatasetBuildError(
            f"The archive has more than {MAX_MEMBERS} members.", "archive_too_large", 413, "archive"
        )


def _zip_members(archive: Path) -> list[tuple[str, PurePosixPath]]:
    members = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = _safe_name(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)  # 0 when the writer recorded no file type
            if info.is_dir() or (kind and kind != stat.S_IFREG):
                continue  # folders are made as needed; links and devices are never made
            members.append((info.filename, path))
            _check_count(len(members))
    return members


def _tar_members(archive: Path) -> list[tuple[str, PurePosixPath]]:
    members = []
    with tarfile.open(archive) as tf:
        for info in tf:
            path = _safe_name(info.name)
            if info.isreg():
                members.append((info.name, path))
                _check_count(len(members))
    return members


def _extract(archive: Path, members: list[tuple[str, PurePosixPath]], dest: Path) -> None:
    written = 0

    def copy(stream, path: PurePosixPath) -> None:
        nonlocal written
        target = dest.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for block in iter(lambda: stream.read(CHUNK), b""):
                written += len(block)
                if written > MAX_UNPACKED_BYTES:
                    raise DatasetBuildError(
                        f"The archive unpacks to more than {MAX_UNPACKED_BYTES} bytes.",
                        "archive_too_large",
                        413,
                        "archive",
                    )
                out.write(block)

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name, path in members:
                with zf.open(name) as stream:
                    copy(stream, path)
    else:
        with tarfile.open(archive) as tf:
            for name, path in members:
                stream = tf.extractfile(name)
                if stream is not None:
                    with stream:
                        copy(stream, path)


# ------------------------------------------------------------------ build and register
def _build_and_register(
    root: Path, name: str, eval_share: float, project_id: str
) -> dict[str, Any]:
    from embedding.data.code_pairs import NoPairsError, SourceError, build_code_pairs
    from embedding.data.examples import write_examples

    try:
        built = build_code_pairs([str(root)], eval_share=eval_share)
    except NoPairsError as exc:
        message = str(exc).replace(str(root), name)
        raise DatasetBuildError(message, "no_documented_functions", 400, None) from None
    except SourceError as exc:
        raise DatasetBuildError(str(exc).replace(str(root), name), "invalid_value") from None
    settings = get_settings()
    if len(built.train) > settings.max_triplets_per_job:
        raise DatasetBuildError(
            f"{len(built.train)} training pairs, more than the cap of "
            f"{settings.max_triplets_per_job} rows a job takes: build from a smaller folder.",
            "too_many_rows",
        )
    files_dir = Path(settings.artifacts_dir).resolve() / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, str, Path, int]] = []
    try:
        for side, pairs in (("train", built.train), ("eval", built.eval)):
            if not pairs:
                continue
            file_id = f"file-{uuid.uuid4().hex}"
            path = files_dir / f"{file_id}.jsonl"
            write_examples(path, [p.example for p in pairs])
            written.append((side, file_id, path, len(pairs)))
        rows = _register(written, name, project_id)
    except BaseException:
        for _, _, path, _ in written:
            path.unlink(missing_ok=True)
        raise
    report = dict(built.report)
    # the server's own paths stay out of the reply: the source is named as the client did
    report["sources"] = [{"label": name, "kind": "archive" if name == "archive" else "folder"}]
    report["by_source"] = {name: next(iter(built.report["by_source"].values()))}
    return {
        "training_file": rows.get("train"),
        "validation_file": rows.get("eval"),
        "report": report,
    }


def _register(
    written: list[tuple[str, str, Path, int]], name: str, project_id: str
) -> dict[str, dict[str, Any]]:
    from db import repo
    from db.session import session_scope

    rows: dict[str, dict[str, Any]] = {}
    with session_scope() as session:
        for side, file_id, path, count in written:
            filename = f"{name}-{'train' if side == 'train' else 'validation'}.jsonl"[-500:]
            row = repo.files.add_file(
                session,
                file_id,
                "fine-tune",
                filename,
                os.path.getsize(path),
                count,
                str(path),
                project_id=project_id,
            )
            rows[side] = {
                "id": row.id,
                "bytes": row.bytes,
                "filename": row.filename,
                "purpose": row.purpose,
                "rows": row.rows,
                "created_at": row.created_at.timestamp() if row.created_at else None,
            }
    return rows
