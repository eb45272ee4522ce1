"""Per-task LoRA adapters (jina-embeddings-v3-hf layout), on a tiny JinaEmbeddingsV3Model.

Each task's vectors must equal base + that task's adapter computed directly with peft; a
call must never leak its adapter into the next; adapters get the safetensors-only rule.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from embedding.inference.encoder import Encoder
from embedding.models import specs
from embedding.models.specs import spec_from_folder
from embedding.models.weights import UnsafeWeightsFormat
from tests.tiny_models import add_task_adapters

TEXTS = ["find users by id", "SELECT * FROM users WHERE id = 1", "a"]


@pytest.fixture(scope="module")
def jina_with_adapters(tiny_jina_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("jina-adapters") / "model"
    shutil.copytree(tiny_jina_dir, folder)
    add_task_adapters(folder, ["retrieval.query", "text-matching"])
    return folder


def _direct(folder, adapter: str | None, texts):
    """Base (+ adapter) with transformers and peft, mean pooling, L2: the reference."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, use_safetensors=True).eval()
    if adapter:
        model = PeftModel.from_pretrained(model, str(folder / adapter)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            hidden = model(input_ids=ids).last_hidden_state[0].mean(0)
            rows.append(torch.nn.functional.normalize(hidden, dim=0).numpy())
    return np.stack(rows)


def test_folder_spec_sees_the_adapters(jina_with_adapters, tiny_jina_dir):
    assert spec_from_folder(jina_with_adapters).task_adapters
    assert not spec_from_folder(tiny_jina_dir).task_adapters


def test_each_task_runs_on_its_own_adapter(jina_with_adapters):
    spec = specs.replace(spec_from_folder(jina_with_adapters), default_task="text-matching")
    encoder = Encoder.load(spec, device="cpu", precision="fp32")
    assert encoder.load_reports[0].adapters == ["retrieval_query", "text_matching"]
    query = encoder.encode(TEXTS, task="retrieval.query")
    matching = encoder.encode(TEXTS, task="text-matching")
    np.testing.assert_allclose(
        query, _direct(jina_with_adapters, "retrieval_query", TEXTS), atol=1e-5
    )
    np.testing.assert_allclose(
        matching, _direct(jina_with_adapters, "text_matching", TEXTS), atol=1e-5
    )
    bare = _direct(jina_with_adapters, None, TEXTS)
    assert np.abs(query - matching).max() > 1e-3 and np.abs(query - bare).max() > 1e-3
    np.testing.assert_allclose(encoder.encode(TEXTS), matching, atol=1e-6)  # default task
    np.testing.assert_allclose(encoder.encode(TEXTS, task="retrieval.query"), query, atol=1e-6)


def test_switching_back_and_forth_in_bf16_leaks_nothing(jina_with_adapters):
    """The bf16 twin must follow the active adapter too."""
    spec = specs.replace(spec_from_folder(jina_with_adapters), default_task="text-matching")
    encoder = Encoder.load(spec, device="cpu", precision="bf16")
    if encoder.precision != "bf16":
        pytest.skip("no bf16 on this CPU")
    first = encoder.encode(TEXTS, task="retrieval.query")
    other = encoder.encode(TEXTS, task="text-matching")
    again = encoder.encode(TEXTS, task="retrieval.query")
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    reference = _direct(jina_with_adapters, "retrieval_query", TEXTS)
    assert (first * reference).sum(axis=1).min() > 0.999


def test_a_task_without_an_adapter_is_a_clear_error(jina_with_adapters):
    encoder = Encoder.load(spec_from_folder(jina_with_adapters), device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="no adapter for task 'separation'"):
        encoder.encode(TEXTS, task="separation")
    with pytest.raises(ValueError, match="name a task"):
        encoder.encode(TEXTS)  # no task and no default


def test_a_spec_that_declares_adapters_refuses_a_folder_without_them(tiny_jina_dir):
    spec = specs.replace(spec_from_folder(tiny_jina_dir), task_adapters=True)
    with pytest.raises(ValueError, match="declares per-task adapters"):
        Encoder.load(spec, device="cpu", precision="fp32")


def test_pickle_adapter_weights_are_refused(jina_with_adapters, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(jina_with_adapters, folder)
    weights = folder / "retrieval_query" / "adapter_model.safetensors"
    weights.rename(weights.with_name("adapter_model.bin"))
    with pytest.raises(UnsafeWeightsFormat, match="pickle"):
        Encoder.load(spec_from_folder(folder), device="cpu", precision="fp32")


def test_training_loads_the_bare_base(jina_with_adapters):
    from embedding.training.setup import load_for_training

    spec = specs.replace(spec_from_folder(jina_with_adapters), default_task="text-matching")
    encoder = load_for_training(spec, precision="fp32")
    assert encoder.adapters == () and encoder.load_reports[0].adapters == []
    np.testing.assert_allclose(
        encoder.encode(TEXTS), _direct(jina_with_adapters, None, TEXTS), atol=1e-5
    )


def test_concurrent_calls_with_different_tasks_keep_their_own_adapter(jina_with_adapters):
    """The active adapter is model state: calls in several threads (the embed worker's
    runners, passes on a pool) must not run under each other's adapter."""
    from concurrent.futures import ThreadPoolExecutor

    from embedding.inference.pass_pool import PassPool

    spec = specs.replace(spec_from_folder(jina_with_adapters), default_task="text-matching")
    encoder = Encoder.load(spec, device="cpu", precision="fp32")
    texts = [f"{t} {i}" for i in range(6) for t in TEXTS]
    expected = {
        task: encoder.encode(texts, task=task) for task in ("retrieval.query", "text-matching")
    }
    tasks = ["retrieval.query", "text-matching"] * 8
    pool = PassPool(2)
    try:
        with ThreadPoolExecutor(len(tasks)) as threads:
            got = list(
                threads.map(
                    lambda task: encoder.encode(texts, task=task, pool=pool, batch_size=2), tasks
                )
            )
    finally:
        pool.shutdown()
    for task, rows in zip(tasks, got, strict=True):
        np.testing.assert_allclose(rows, expected[task], atol=1e-5)
