"""``POST /v1/datasets`` and the ``embedding.build_dataset`` task, through the ``openai`` SDK:
a folder under the model roots or an uploaded zip/tar becomes two registered files that a
fine-tuning job trains on; bad input is a 4xx in OpenAI's error shape with nothing left.

The embedded default (SQLite, the in-process worker) on a real port, as test_api_embedded.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from embedding.training.hyperparameters import PAIRS_RECIPE
from tests.support import free_port

pytestmark = pytest.mark.slow


def source(i: int) -> str:
    return (
        f'def total_{i}(values):\n    """Add up the values of batch number {i}."""\n'
        f"    total = {i}\n    for v in values:\n        total += v * {i}\n    return total\n"
    )


def js_source(i: int) -> str:
    return (
        f"/**\n * Scale every item of list {i} by its weight.\n * @param items the items\n */\n"
        f"export function scale{i}(items) {{\n  const k = {i};\n  return items.map((x) => x * k);\n}}\n"
    )


def repo_files(count: int = 24) -> dict[str, str]:
    files = {f"pkg/m{i}.py": source(i) for i in range(count)}
    files.update({f"web/s{i}.js": js_source(i) for i in range(count // 2)})
    files["tests/test_m.py"] = source(999)
    return files


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    import uvicorn

    from core.config import get_settings

    tmp = tmp_path_factory.mktemp("datasets-api")
    roots = tmp / "roots"
    saved = {k: v for k, v in os.environ.items() if k.startswith("EMBEDDING_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(
        {
            "EMBEDDING_DATABASE_URL": f"sqlite:///{tmp / 'embedding.db'}",
            "EMBEDDING_ARTIFACTS_DIR": str(tmp / "artifacts"),
            "EMBEDDING_MODEL_ROOTS": f'["{tmp / "artifacts"}", "{roots}"]',
        }
    )
    get_settings.cache_clear()
    from api.app import create_app

    for rel, text in repo_files().items():
        (roots / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (roots / "repo" / rel).write_text(text)
    (roots / "bare").mkdir(parents=True)
    (roots / "bare" / "a.py").write_text("def f(a):\n    b = a\n    return b\n")
    (tmp / "outside").mkdir()
    (tmp / "outside" / "m.py").write_text(source(1))

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield SimpleNamespace(base=f"http://127.0.0.1:{port}", tmp=tmp, roots=roots)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        for key in [k for k in os.environ if k.startswith("EMBEDDING_")]:
            del os.environ[key]
        os.environ.update(saved)
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(api):
    from openai import OpenAI

    return OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0, timeout=300)


def build(client, *, folder: str | None = None, archive: bytes | None = None, name="repo.zip"):
    """``POST /v1/datasets`` through the SDK's own request path (multipart form)."""
    data = {"eval_share": "0.25"}
    if folder is not None:
        data["folder"] = folder
    files = [("archive", (name, archive))] if archive is not None else None
    return client.post(
        "/datasets",
        cast_to=object,
        body=data,
        files=files or [("unused", ("", b""))],
        options={"headers": {"Content-Type": "multipart/form-data"}},
    )


def left_behind(api) -> tuple[list[str], list[str]]:
    """Registered-file bytes and scratch folders on disk."""
    artifacts = api.tmp / "artifacts"
    files = (
        sorted(p.name for p in (artifacts / "files").glob("*"))
        if (artifacts / "files").exists()
        else []
    )
    scratch = (
        sorted(p.name for p in (artifacts / "tmp").glob("*"))
        if (artifacts / "tmp").exists()
        else []
    )
    return files, scratch


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def tar_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_folder_becomes_files_a_fine_tuning_job_trains_on(api, client):
    reply = build(client, folder=str(api.roots / "repo"))
    train, validation, report = reply["training_file"], reply["validation_file"], reply["report"]
    assert train["purpose"] == "fine-tune" and validation is not None
    assert train["rows"] + validation["rows"] == 36  # 24 Python + 12 JavaScript; tests skipped
    assert set(report["by_language"]) == {"python", "javascript"}
    assert report["skipped"]["tests"] == 1
    assert str(api.tmp) not in str(report), "the server's paths leak into the reply"
    assert client.files.retrieve(train["id"]).filename == "repo-train.jsonl"
    content = client.files.content(train["id"]).text.splitlines()
    assert len(content) == train["rows"] and '"anchor"' in content[0]

    # No loss and no learning rate given: the pairs get the default recipe (issue 26).
    job = client.fine_tuning.jobs.create(
        model="minilm",
        training_file=train["id"],
        validation_file=validation["id"],
        hyperparameters={"n_epochs": 1, "batch_size": 8},
    )
    assert job.loss == PAIRS_RECIPE["loss"], job
    assert job.hyperparameters.learning_rate == pytest.approx(PAIRS_RECIPE["lr"])
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (1, 8)
    deadline = time.monotonic() + 300
    while job.status in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error


@pytest.mark.parametrize("pack", [zip_of, tar_of])
def test_an_archive_of_a_repository_is_built_and_unpacked_nowhere_after(api, client, pack):
    before_files, _ = left_behind(api)
    reply = build(client, archive=pack(repo_files(8)), name="repo.archive")
    assert reply["training_file"]["rows"] + (reply["validation_file"] or {"rows": 0})["rows"] == 12
    files, scratch = left_behind(api)
    assert len(files) == len(before_files) + (2 if reply["validation_file"] else 1)
    assert scratch == [] and not list((api.tmp / "artifacts" / "files").glob("archive-*"))


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"folder": "MISSING"}, 404, "folder_not_found"),
        ({"folder": "OUTSIDE"}, 403, "path_not_allowed"),
        ({"folder": "BARE"}, 400, "no_documented_functions"),
        ({"archive": zip_of({"../evil.py": source(3), "ok.py": source(4)})}, 400, "unsafe_archive"),
        ({"archive": tar_of({"/abs/evil.py": source(3)})}, 400, "unsafe_archive"),
        ({"archive": b"not an archive at all"}, 400, "invalid_archive"),
        ({"archive": zip_of({"a.py": "x = 1\n"})}, 400, "no_documented_functions"),
        ({}, 400, "invalid_value"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_leaves_nothing(api, client, request_kwargs, status, code):
    import openai

    where = {
        "MISSING": str(api.roots / "nope"),
        "OUTSIDE": str(api.tmp / "outside"),
        "BARE": str(api.roots / "bare"),
    }
    if "folder" in request_kwargs:
        request_kwargs = {"folder": where[request_kwargs["folder"]]}
    before = left_behind(api)
    listed = len(client.files.list().data)
    with pytest.raises(openai.APIStatusError) as caught:
        build(client, **request_kwargs)
    assert caught.value.status_code == status
    assert caught.value.body["code"] == code, caught.value.body
    assert caught.value.body["message"]
    assert left_behind(api) == before
    assert len(client.files.list().data) == listed
    assert not (api.tmp / "artifacts" / "evil.py").exists()
    assert not Path("/abs/evil.py").exists()
