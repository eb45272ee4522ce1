"""Dynamic batching (worker and API) and the embedding cache, in-process with the real model.

The worker-path and HTTP-path tests against real processes are in
``test_embed_serving.py``; here the batcher, the coalescer and the cache are driven
directly, so a failure points at one of them.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from api.coalescer import Coalescer
from db.repo import ALL_PROJECTS
from tests.servers import _wait_until
from workers.serving.embed_batching import BatchKey, EmbedBatcher

CALLERS = 24


def texts_for(i: int) -> list[str]:
    """Distinct texts per caller, 1 to 3 of them, of different lengths."""
    return [
        f"def caller_{i}_part_{j}(x): return x * {i + j}" + " + 1" * j for j in range(1 + i % 3)
    ]


def assert_own_rows(rows: np.ndarray, texts: list[str], direct: np.ndarray, all_texts: list[str]):
    """Each row is the direct encode of its own text: cosine ~1, and no other text closer."""
    for row, text in zip(rows, texts, strict=True):
        sims = direct @ row
        assert all_texts[int(np.argmax(sims))] == text
        assert sims[all_texts.index(text)] > 0.999


def test_concurrent_callers_get_their_own_rows_from_shared_batches(minilm):
    def encode(key: BatchKey, texts: list[str]):
        vectors, report = minilm.encode(texts, return_report=True)
        return vectors, [r.tokens_used for r in report]

    batcher = EmbedBatcher(encode, wait_s=0.05, token_budget=4096, max_texts=4096)
    all_texts = [t for i in range(CALLERS) for t in texts_for(i)]
    direct = minilm.encode(all_texts)
    key = BatchKey("minilm", None, None, True)
    start = threading.Barrier(CALLERS)

    def call(i: int):
        start.wait()
        return batcher.submit(key, texts_for(i)).result(timeout=120)

    with ThreadPoolExecutor(CALLERS) as pool:
        replies = list(pool.map(call, range(CALLERS)))
    for i, (rows, tokens, _, compute_s) in enumerate(replies):
        assert rows.shape == (len(texts_for(i)), minilm.dim) and len(tokens) == len(rows)
        assert_own_rows(rows, texts_for(i), direct, all_texts)
        assert compute_s > 0  # its share of its batch's encode time (usage accounting)
    assert batcher.batches < CALLERS  # they shared forward passes
    assert max(batch for _, _, batch, _ in replies) > len(texts_for(0))


def test_a_bad_request_in_a_batch_fails_alone(minilm):
    def encode(key: BatchKey, texts: list[str]):
        vectors, report = minilm.encode(texts, return_report=True)  # TypeError on a non-str
        return vectors, [r.tokens_used for r in report]

    batcher = EmbedBatcher(encode, wait_s=0.2, token_budget=4096, max_texts=4096)
    key = BatchKey("minilm", None, None, True)
    good = [batcher.submit(key, [f"def ok_{i}(): pass"]) for i in range(4)]
    bad = batcher.submit(key, ["def fine(): pass", 123])  # type: ignore[list-item]
    good.append(batcher.submit(key, ["def last_ok(): pass"]))
    with pytest.raises(TypeError):
        bad.result(timeout=60)
    direct = minilm.encode([f"def ok_{i}(): pass" for i in range(4)] + ["def last_ok(): pass"])
    for future, expected in zip(good, direct, strict=True):
        rows, _, _, _ = future.result(timeout=60)
        assert float(rows[0] @ expected) > 0.999


def test_the_api_coalescer_sends_one_task_and_slices_it(minilm):
    sent: list[list[str]] = []

    def send(key, texts: list[str]):
        sent.append(list(texts))
        if any("BAD" in t for t in texts):
            raise ValueError("a refused request")
        vectors, report = minilm.encode(texts, return_report=True)
        return {"rows": len(texts), "matrix": vectors, "tokens": [r.tokens_used for r in report]}

    coalescer = Coalescer(send, wait_s=0.2, token_budget=4096, max_texts=4096)
    all_texts = [t for i in range(CALLERS) for t in texts_for(i)]
    direct = minilm.encode(all_texts)
    start = threading.Barrier(CALLERS + 1)

    def call(i: int):
        start.wait()
        if i == CALLERS:
            with pytest.raises(ValueError):
                coalescer.embed(("minilm", None, True), ["BAD text"])
            return None
        return coalescer.embed(("minilm", None, True), texts_for(i))

    with ThreadPoolExecutor(CALLERS + 1) as pool:
        replies = list(pool.map(call, range(CALLERS + 1)))
    for i, reply in enumerate(replies[:CALLERS]):
        assert reply["rows"] == len(texts_for(i)) == len(reply["tokens"])
        assert_own_rows(reply["matrix"], texts_for(i), direct, all_texts)
    # Coalesced: a task carried several callers' texts (a group with the bad request in it
    # failed as a whole and was sent again one call at a time).
    assert max(len(texts) for texts in sent) > max(len(texts_for(i)) for i in range(CALLERS))


def test_the_coalescer_holds_a_group_while_a_one_at_a_time_worker_is_busy(minilm):
    """The embedded mode's worker runs one task at a time. With ``max_in_flight=1`` the
    calls that arrive while its task runs gather into one group, sent when it returns,
    however far apart they come (here 10 ms apart, five times the 2 ms window); without
    the hold each would be a task of its own, queued behind the others."""
    sent: list[list[str]] = []
    busy = threading.Event()
    worker = threading.Lock()

    def send(key, texts: list[str]):
        with worker:  # one task at a time
            sent.append(list(texts))
            if len(sent) == 1:
                assert busy.wait(60)
            vectors, report = minilm.encode(texts, return_report=True)
            return {
                "rows": len(texts),
                "matrix": vectors,
                "tokens": [r.tokens_used for r in report],
            }

    coalescer = Coalescer(send, wait_s=0.002, token_budget=10**6, max_texts=4096, max_in_flight=1)
    key = ("minilm", None, True)
    with ThreadPoolExecutor(CALLERS) as pool:
        first = pool.submit(coalescer.embed, key, texts_for(0))
        assert _wait_until(
            lambda: len(sent) == 1, 60, 0.005
        )  # the worker is busy with the first call
        later = []
        for i in range(1, CALLERS):
            later.append(pool.submit(coalescer.embed, key, texts_for(i)))
            time.sleep(0.01)  # arrivals spread over far more than the window
        group = coalescer._open[key]
        assert _wait_until(lambda: len(group.members) == CALLERS - 1, 60, 0.005)
        assert len(sent) == 1  # nothing else was sent while the worker was busy
        busy.set()
        replies = [first.result(timeout=60)] + [f.result(timeout=60) for f in later]
    all_texts = [t for i in range(CALLERS) for t in texts_for(i)]
    assert sent == [texts_for(0), all_texts[len(texts_for(0)) :]]  # one task for the rest
    direct = minilm.encode(all_texts)
    for i, reply in enumerate(replies):
        assert_own_rows(reply["matrix"], texts_for(i), direct, all_texts)


def test_a_full_group_is_sent_even_while_held(minilm):
    """The hold never makes a batch larger than the budget: a full group goes at once."""
    sent: list[list[str]] = []
    busy = threading.Event()

    def send(key, texts: list[str]):
        sent.append(list(texts))
        if len(sent) == 1:
            assert busy.wait(60)
        return {"rows": len(texts), "matrix": minilm.encode(texts), "tokens": [1] * len(texts)}

    coalescer = Coalescer(send, wait_s=0.002, token_budget=10**6, max_texts=4, max_in_flight=1)
    key = ("minilm", None, True)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(coalescer.embed, key, ["def a(): pass"])
        assert _wait_until(lambda: len(sent) == 1, 60, 0.005)
        rest = [pool.submit(coalescer.embed, key, [f"def f{i}(): pass"]) for i in range(4)]
        assert _wait_until(
            lambda: len(sent) == 2, 60, 0.005
        )  # four texts: full, sent while the first is out
        busy.set()
        assert all(f.result(timeout=60)["rows"] == 1 for f in [first, *rest])
    assert sorted(sent[1]) == sorted(f"def f{i}(): pass" for i in range(4))


# ------------------------------------------------------------------ the cache
@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    from core.config import get_settings
    from tests.support import redis_url
    from workers.serving import embedding_cache
    from workers.serving.model_cache import model_cache

    url = redis_url(9)
    monkeypatch.setenv("EMBEDDING_CACHE_URL", url)
    monkeypatch.setenv("EMBEDDING_MODEL_ROOTS", f'["{tmp_path}"]')
    monkeypatch.delenv("EMBEDDING_BROKER_URL", raising=False)
    get_settings.cache_clear()
    embedding_cache._caches.clear()
    model_cache().clear()
    yield embedding_cache.embedding_cache()
    model_cache().clear()
    embedding_cache._caches.clear()
    get_settings.cache_clear()


def _embed(texts: list[str], model: str, cache: bool = True) -> dict:
    from workers.schemas import EmbedRequest
    from workers.serving import embed_service
    from workers.serving.model_names import checked_model_name

    request = EmbedRequest(texts=texts, model=model, cache=cache)
    return embed_service.embed(request, checked_model_name(model, scope=ALL_PROJECTS))


def _new_version(folder: Path, seed: int) -> None:
    """What registering a fine-tuned version under the same name does to the files: new
    weights in place (here: every tensor nudged, so the vectors really change)."""
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    rng = np.random.default_rng(seed)
    nudged = {k: (v + rng.normal(0, 0.02, v.shape)).astype(v.dtype) for k, v in tensors.items()}
    save_file(nudged, path, metadata={"format": "pt"})


@pytest.mark.integration
def test_the_cache_never_serves_another_version_of_the_same_name(cache_env, tmp_path):
    from embedding.inference.encoder import Encoder
    from tests.tiny_models import MINILM_DIR
    from workers.serving.model_cache import model_cache

    folder = tmp_path / "my-model"
    shutil.copytree(MINILM_DIR, folder)
    text = ["def cached_text(): return 1"]
    first = _embed(text, str(folder))
    assert cache_env.stats()["misses"] == 1 and cache_env.stats()["entries"] == 1
    again = _embed(text, str(folder))
    assert cache_env.stats()["hits"] == 1
    np.testing.assert_array_equal(first["vectors"], again["vectors"])

    _new_version(folder, seed=1)  # the same name, a new version
    model_cache().clear()  # a worker that loads it now (a restarted or another one)
    after = _embed(text, str(folder))
    assert after["model_version"] != first["model_version"]
    fresh = Encoder.load(folder, device="cpu").encode(text)
    assert float(after["vectors"][0] @ fresh[0]) > 0.9999
    assert float(after["vectors"][0] @ first["vectors"][0]) < 0.999  # really another model
    assert cache_env.stats()["hits"] == 1  # the new version's text was a miss


@pytest.mark.integration
def test_cache_false_neither_reads_nor_writes(cache_env):
    before = cache_env.stats()
    _embed(["def not_cached(): pass"], "minilm", cache=False)
    _embed(["def not_cached(): pass"], "minilm", cache=False)
    after = cache_env.stats()
    assert (after.get("hits", 0), after.get("misses", 0)) == (
        before.get("hits", 0),
        before.get("misses", 0),
    )
    assert after["entries"] == before["entries"]


def test_the_cache_refuses_the_brokers_database():
    from workers.serving.embedding_cache import CacheOnBrokerDatabase, EmbeddingCache

    with pytest.raises(CacheOnBrokerDatabase):
        EmbeddingCache("redis://h:6379/0", 60, broker_urls=("redis://:pw@h:6379/0",))
    EmbeddingCache("redis://h:6379/2", 60, broker_urls=("redis://:pw@h:6379/0",))


class GatedEncode:
    """The real model behind a gate: each batch waits until the test opens it (to hold a
    batch "running" while the test submits more), and every batch's texts are recorded."""

    def __init__(self, encoder, pool=None) -> None:
        self.encoder, self.pool = encoder, pool
        self.started: list[list[str]] = []
        self.gates: list[threading.Event] = []
        self.lock = threading.Lock()

    def __call__(self, key: BatchKey, texts: list[str]):
        gate = threading.Event()
        with self.lock:
            self.started.append(list(texts))
            self.gates.append(gate)
        assert gate.wait(60), "the test never opened this batch"
        vectors, report = self.encoder.encode(texts, return_report=True, pool=self.pool)
        return vectors, [r.tokens_used for r in report]

    def wait_started(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.started) < n:
            assert time.monotonic() < deadline, f"{len(self.started)} batches started, not {n}"
            time.sleep(0.005)


def test_two_runners_overlap_and_a_free_one_waits_for_a_fair_share(minilm):
    from embedding.inference.pass_pool import PassPool

    pool = PassPool(2)
    encode = GatedEncode(minilm, pool)
    batcher = EmbedBatcher(encode, wait_s=0.01, token_budget=4096, max_texts=4096, runners=2)
    key = BatchKey("minilm", None, None, True)
    texts = [f"def g_{i}(y): return y - {i}" for i in range(16)]
    try:
        first = batcher.submit(key, texts[:8])
        encode.wait_started(1)  # runner 1 holds 8 texts
        lone = batcher.submit(key, texts[8:9])
        time.sleep(0.1)  # ten times wait_s: long past due, were no batch running
        assert len(encode.started) == 1, "a 1-text batch started beside an 8-text one"
        rest = [batcher.submit(key, [t]) for t in texts[9:16]]
        encode.wait_started(2)  # 8 pending now: runner 2 takes them, beside runner 1
        assert sorted(encode.started[1]) == sorted(texts[8:16])
        assert batcher.most_running == 2
        for gate in encode.gates:
            gate.set()
        direct = minilm.encode(texts)
        rows, _, batch_texts, _ = first.result(timeout=60)
        assert batch_texts == 8 and np.sum(rows * direct[:8], axis=1).min() > 0.999
        for i, future in enumerate([lone, *rest]):
            rows, _, batch_texts, _ = future.result(timeout=60)
            assert batch_texts == 8 and float(rows[0] @ direct[8 + i]) > 0.999

        # With no batch running, the wait ends: a lone text goes once it is wait_s old.
        held = batcher.submit(key, texts[:8])
        encode.wait_started(3)
        lone = batcher.submit(key, ["def alone(): pass"])
        time.sleep(0.05)
        assert len(encode.started) == 3
        encode.gates[2].set()  # the running batch ends: the free runners' wait ends too
        encode.wait_started(4)
        encode.gates[3].set()
        assert held.result(timeout=60)[2] == 8 and lone.result(timeout=60)[2] == 1
    finally:
        for gate in encode.gates:
            gate.set()
        pool.shutdown()


def test_two_runners_keep_every_callers_rows_apart(minilm):
    from embedding.inference.pass_pool import PassPool

    pool = PassPool(2)

    def encode(key: BatchKey, texts: list[str]):
        vectors, report = minilm.encode(texts, return_report=True, pool=pool)
        return vectors, [r.tokens_used for r in report]

    batcher = EmbedBatcher(encode, wait_s=0.005, token_budget=4096, max_texts=4096, runners=2)
    all_texts = [t for i in range(CALLERS) for t in texts_for(i)]
    direct = minilm.encode(all_texts)
    key = BatchKey("minilm", None, None, True)

    def call(i: int):
        return batcher.submit(key, texts_for(i)).result(timeout=120)

    try:
        with ThreadPoolExecutor(CALLERS) as threads:
            replies = list(threads.map(call, [i % CALLERS for i in range(3 * CALLERS)]))
    finally:
        pool.shutdown()
    for i, (rows, _, _, _) in enumerate(replies):
        assert_own_rows(rows, texts_for(i % CALLERS), direct, all_texts)
