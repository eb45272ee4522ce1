"""What a model name means (workers/serving/model_names.py), on a migrated SQLite registry."""

from __future__ import annotations

import pytest

from db.repo import ALL_PROJECTS
from embedding.models.hub import PathNotAllowed
from embedding.models.specs import UnknownModel

SHA = "ab" * 32


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry with one succeeded job (suffix "billing") and its version folder."""
    from core.config import get_settings
    from db import migrate, repo
    from db.session import dispose_engines, session_scope

    url = f"sqlite:///{tmp_path / 'reg.db'}"
    artifacts = tmp_path / "artifacts"
    folder = artifacts / "jobs" / "x" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("EMBEDDING_DATABASE_URL", url)
    monkeypatch.setenv("EMBEDDING_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.delenv("EMBEDDING_MODEL_ROOTS", raising=False)
    get_settings.cache_clear()
    migrate.upgrade(url)
    with session_scope() as session:
        job = repo.jobs.create_job(
            session, "minilm", {"epochs": 1, "suffix": "billing"}, project_id="proj_default"
        )
        version = repo.versions.register_model_version(
            session, "minilm-billing", "minilm", str(folder), SHA, None, project_id="proj_default"
        )
        repo.jobs.finish_job(session, job.id, "succeeded", model_version_id=version.id)
        job_id = str(job.id)
    yield {"job_id": job_id, "folder": str(folder), "tmp": tmp_path}
    dispose_engines()
    get_settings.cache_clear()


def test_every_name_of_a_version_resolves_to_its_folder(registry):
    from workers.serving.model_names import checked_model_name, find_version, local_model_name

    job_id = registry["job_id"]
    for name in (
        "minilm-billing",
        "minilm-billing:1",
        f"ft:minilm:billing:{job_id}",
        job_id,
    ):
        assert checked_model_name(name, scope=ALL_PROJECTS) == registry["folder"], name
        assert local_model_name(name) == registry["folder"], name
    found = find_version(job_id, scope=ALL_PROJECTS)
    assert (found.name, found.version, found.fine_tuned_id) == (
        "minilm-billing",
        1,
        f"ft:minilm:billing:{job_id}",
    )


@pytest.mark.parametrize(
    "name",
    [
        "minilm-billing:2",
        "minilm-billing:0",
        "ft:minilm:other:{job}",
        "ft:qodo:billing:{job}",
        "ft:broken",
        "nothing-registered",
        "bad\x00name",
        "lone\udc80",
        "x" * 600,
        "\x0b",  # blank: found by schemathesis through POST /v1/fine_tuning/jobs (was a 500)
        " ",
        " :1",
    ],
)
def test_names_that_are_no_model_are_unknown_not_database_errors(registry, name):
    from workers.serving.model_names import checked_model_name

    with pytest.raises(UnknownModel):
        checked_model_name(name.format(job=registry["job_id"]), scope=ALL_PROJECTS)


def test_hub_ids_only_where_a_spec_names_them(registry):
    from workers.serving.model_names import checked_model_name, local_model_name

    assert checked_model_name("Qodo/Qodo-Embed-1-1.5B", scope=ALL_PROJECTS) == "qodo"
    with pytest.raises(UnknownModel, match="named by no spec"):
        checked_model_name("someorg/somemodel", scope=ALL_PROJECTS)
    assert local_model_name("someorg/somemodel") == "someorg/somemodel"  # the user's machine


def test_folders_payloads_under_the_roots_cli_anywhere_out_folder_means_its_model(registry):
    from workers.serving.model_names import checked_model_name, local_model_name

    out = registry["tmp"] / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")
    assert local_model_name(str(out)) == str(out / "model")
    with pytest.raises(PathNotAllowed):
        checked_model_name(str(out), scope=ALL_PROJECTS)
    job_folder = registry["folder"].rsplit("/model", 1)[0]
    assert (
        checked_model_name(job_folder, scope=ALL_PROJECTS) == registry["folder"]
    )  # default roots: artifacts


def test_an_unmigrated_embedded_database_is_not_created_by_a_lookup(tmp_path, monkeypatch):
    from core.config import get_settings
    from workers.serving.model_names import local_model_name

    monkeypatch.setenv("EMBEDDING_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    get_settings.cache_clear()
    try:
        with pytest.raises(UnknownModel):
            local_model_name("typo-model")
        assert not (tmp_path / "never.db").exists()
    finally:
        get_settings.cache_clear()
