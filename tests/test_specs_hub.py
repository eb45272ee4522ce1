"""Specs, resolution order, ModelUnavailable, and the model-path roots check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from embedding.models import specs
from embedding.models.hub import ModelUnavailable, PathNotAllowed, ensure_under_roots, resolve
from embedding.models.specs import ModelSpec, UnknownModel, get_spec, spec_from_folder
from embedding.models.weights import UnsafeWeightsFormat
from tests.tiny_models import MINILM_DIR, write_st_pooling


def test_builtin_facts():
    assert (get_spec("minilm").dim, get_spec("minilm").pooling, get_spec("minilm").max_tokens) == (
        384,
        "mean",
        256,
    )
    qodo = get_spec("qodo")
    assert (qodo.repo_id, qodo.architecture, qodo.pooling, qodo.dim, qodo.shards) == (
        "Qodo/Qodo-Embed-1-1.5B",
        "qwen2",
        "last_token",
        1536,
        2,
    )
    jina = get_spec("jina_v3")
    assert jina.repo_id == "jinaai/jina-embeddings-v3-hf" and jina.dim == 1024
    assert jina.architecture == "jina_embeddings_v3" and not jina.trust_remote_code
    assert set(jina.prompts) == {
        "retrieval.query",
        "retrieval.passage",
        "text-matching",
        "classification",
        "separation",
    }
    assert jina.matryoshka_dims[0] == 32 and jina.matryoshka_dims[-1] == 1024
    combined = get_spec("combined")
    assert combined.members == ("qodo", "jina_v3")
    assert combined.dim == sum(get_spec(m).dim for m in combined.members) == 2560
    # Facts we cannot check offline say so.
    assert not qodo.revision_verified and not jina.revision_verified


def test_remote_code_needs_a_pinned_revision():
    with pytest.raises(ValueError, match="pinned"):
        ModelSpec(name="x", source="hub", repo_id="a/b", trust_remote_code=True)
    pinned = ModelSpec(
        name="x", source="hub", repo_id="a/b", trust_remote_code=True, revision="a" * 40
    )
    assert pinned.is_pinned


def test_unknown_model_names_what_was_tried():
    with pytest.raises(UnknownModel, match="not a registered spec"):
        get_spec("no-such-model")


def test_sentence_transformers_files_set_pooling_and_prompts(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(MINILM_DIR, folder)
    write_st_pooling(folder, "cls", 384, prompts={"query": "q: "})
    spec = spec_from_folder(folder)
    assert spec.pooling == "cls" and spec.dim == 384
    assert spec.prompts == {"query": "q: "} and spec.prompt_for("query") == "q: "
    with pytest.raises(ValueError, match="no task"):
        spec.prompt_for("nope")
    assert spec_from_folder(MINILM_DIR).max_tokens == 256


def test_user_spec_can_be_registered(tmp_path):
    spec = specs.register(ModelSpec(name="my-local", source="local", path=str(MINILM_DIR), dim=384))
    try:
        assert get_spec("my-local") is spec
        assert resolve(spec).source == "local"
    finally:
        specs._registry.pop("my-local")


def test_bundled_resolves_first():
    resolved = resolve(get_spec("minilm"))
    assert resolved.source == "bundled" and (resolved.folder / "model.safetensors").is_file()


def test_offline_hub_model_is_unavailable_with_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as info:
        resolve(get_spec("qodo"))
    message = str(info.value)
    assert "qodo" in message and "HF cache" in message and "HF_HUB_OFFLINE=1" in message
    assert len(info.value.tried) == 2


def test_hub_model_resolves_from_the_hf_cache(tmp_path, monkeypatch):
    """A snapshot laid out in HF_HOME the way huggingface_hub stores it is found offline."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    repo = tmp_path / "hf" / "hub" / "models--Org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(MINILM_DIR, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    resolved = resolve(ModelSpec(name="tiny", source="hub", repo_id="Org/tiny", revision=commit))
    assert resolved.source == "hf-cache"
    assert resolved.folder.name == commit


def test_network_failure_is_model_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # An endpoint on a closed local port: the download fails fast, as any network error would.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelUnavailable, match="hub download"):
        resolve(ModelSpec(name="net", source="hub", repo_id="Org/absent", revision="main"))


def test_local_folder_missing_files_is_unavailable(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="missing"):
        resolve(ModelSpec(name="half", source="local", path=str(tmp_path)))


def test_local_folder_with_only_pickles_is_refused(tmp_path):
    shutil.copy(MINILM_DIR / "config.json", tmp_path)
    shutil.copy(MINILM_DIR / "tokenizer.json", tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeWeightsFormat):
        resolve(ModelSpec(name="pkl", source="local", path=str(tmp_path)))


def test_model_paths_must_stay_under_the_roots(tmp_path):
    root = tmp_path / "models"
    (root / "ok").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert ensure_under_roots(root / "ok", [root]) == (root / "ok").resolve()
    for bad in (root / ".." / "secret", root / "link", Path("/etc")):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
            ensure_under_roots(bad, [root])
