"""Forward passes side by side on single-threaded workers (:mod:`embedding.inference.pass_pool`): the
workers run torch on one core, the rest of the process keeps its threads, and an encode on
the pool gives the rows an encode without it gives, in order, from any number of threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedding.inference.pass_pool import PassPool


@pytest.fixture(scope="module")
def pass_pool():
    pool = PassPool(2)
    yield pool
    pool.shutdown()


def test_workers_run_torch_on_one_core_and_the_process_keeps_its_default(pass_pool):
    import torch

    default = torch.get_num_threads()
    seen = [pass_pool.submit(torch.get_num_threads).result() for _ in range(6)]
    assert seen == [1] * 6
    assert torch.get_num_threads() == default
    fresh: list[int] = []
    started = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    started.start()
    started.join()
    assert fresh == [default]  # threads started later get the default, not the workers' 1


def test_a_pool_needs_a_worker():
    with pytest.raises(ValueError, match="at least one worker"):
        PassPool(0)


def _texts() -> list[str]:
    """Lengths from a few tokens to past the 256-token cap, so the plan has several passes."""
    return [f"def f_{i}(x):\n    return x" + " + x" * (i * 9 % 200) for i in range(40)]


def test_encode_on_the_pool_gives_the_same_rows_in_order(minilm, pass_pool):
    texts = _texts()
    alone, report_alone = minilm.encode(texts, return_report=True)
    pooled, report_pooled = minilm.encode(texts, return_report=True, pool=pass_pool)
    assert pooled.shape == alone.shape
    cosines = np.sum(alone * pooled, axis=1)
    assert cosines.min() > 0.9999, cosines.min()  # the same text in another pass shape
    assert [r.tokens_used for r in report_pooled] == [r.tokens_used for r in report_alone]
    one = minilm.encode(texts[:1], pool=pass_pool)  # a single pass: run in the caller
    assert float(one[0] @ alone[0]) > 0.9999


def test_progress_counts_every_text_once(minilm, pass_pool):
    class Count:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    progress = Count()
    minilm.encode(_texts(), pool=pass_pool, progress=progress, batch_size=4)
    assert progress.n == len(_texts())


def test_concurrent_encodes_of_one_encoder_each_get_their_own_rows(minilm, pass_pool):
    texts = _texts()
    direct = minilm.encode(texts)
    calls = [texts[i::4] for i in range(4)] * 3

    def call(chunk: list[str]) -> np.ndarray:
        return minilm.encode(chunk, pool=pass_pool)

    with ThreadPoolExecutor(len(calls)) as threads:
        results = list(threads.map(call, calls))
    index = {t: i for i, t in enumerate(texts)}
    for chunk, rows in zip(calls, results, strict=True):
        expected = direct[[index[t] for t in chunk]]
        assert np.sum(rows * expected, axis=1).min() > 0.9999


def test_a_failing_pass_fails_the_encode(minilm, pass_pool, monkeypatch):
    """The first failure is raised once every pass has ended."""
    real = type(minilm).embed
    calls = []

    def embed(self, features, **kwargs):
        calls.append(features["input_ids"].shape)
        if len(calls) == 2:
            raise RuntimeError("pass 2 broke")
        return real(self, features, **kwargs)

    monkeypatch.setattr(type(minilm), "embed", embed)
    with pytest.raises(RuntimeError, match="pass 2 broke"):
        minilm.encode(_texts(), pool=pass_pool, batch_size=4)
    assert len(calls) > 2  # the other passes ran to their end
