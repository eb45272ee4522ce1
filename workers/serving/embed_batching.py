"""Dynamic batching on the worker: concurrent embed requests run as one encoder batch.

A worker serving the ``embed`` queue runs the threads pool (``embedctl worker --queues
embed``): each ``embedding.embed`` message is a thread that hands its texts to the one
:class:`EmbedBatcher` of the process and waits for its own rows. A runner thread takes the
oldest pending request, waits until that one is ``wait_s`` old or the requests with the
same :class:`BatchKey` fill the encoder's token budget, then encodes all of them in one
``encode`` call (which sorts by length and packs forward passes under the same budget) and
hands each caller its slice, in order.

With ``runners`` > 1 (one per core in the embed worker, each batch's passes on a
:class:`~embedding.inference.pass_pool.PassPool`), a second batch starts while the first runs, so the
cores never idle between batches while replies go out and the next requests come in. A
free runner does not take a batch smaller than the average running one, unless no batch
runs: under a steady load the runners split it evenly (measured with 32 single-text
clients, taking whatever had waited ``wait_s`` made batches of 7 texts on average, against
15 with this rule); when the other runners finish, the wait ends.

Why not ``celery-batches``: its 0.11 release requires ``celery<5.7`` (we run 5.7), it
flushes on message count and a repeating timer rather than on tokens and the oldest
request's age, and it replaces the task's signature with a list of requests. Here every
message stays an ordinary task: Celery acks it, stores its own result under its own id,
and a failure is that task's exception.

A batch that fails is run again one request at a time, so a bad request fails alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchKey:
    """Requests that may share a forward pass: the same model and the same settings."""

    model: str
    task: str | None
    truncate_dim: int | None
    normalize: bool


# What the runner calls: texts -> (rows, tokens per row), for one key.
Encode = Callable[[BatchKey, list[str]], tuple[np.ndarray, list[int]]]


@dataclass
class _Pending:
    key: BatchKey
    texts: list[str]
    born: float
    tokens: int
    future: Future = field(default_factory=Future)


def estimated_tokens(texts: Sequence[str]) -> int:
    """A tokenizer-free guess (about 4 characters a token, plus the special tokens).

    Not a text (which the encoder refuses, for that request alone): counted as 2."""
    return sum((len(t) // 4 if isinstance(t, str) else 0) + 2 for t in texts)


class EmbedBatcher:
    def __init__(
        self, encode: Encode, wait_s: float, token_budget: int, max_texts: int, runners: int = 1
    ) -> None:
        self._encode = encode
        self.wait_s = wait_s
        self.token_budget = token_budget
        self.max_texts = max_texts
        self.runners = runners
        self._pending: list[_Pending] = []
        self._running: list[int] = []  # texts of each batch being encoded
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.batches = 0  # batches run, for logs and tests
        self.most_running = 0  # the most batches encoded at once, for tests

    def submit(self, key: BatchKey, texts: list[str]) -> Future:
        """Queue one request; the future's result is ``(rows, tokens, batch_texts,
        compute_s)``: ``compute_s`` is this request's share of its batch's encode time."""
        item = _Pending(key, list(texts), time.monotonic(), estimated_tokens(texts))
        with self._cond:
            self._pending.append(item)
            self._start()
            self._cond.notify_all()
        return item.future

    def _start(self) -> None:
        """Start the runners on first use (and again in a forked child, where none run)."""
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.runners:
            runner = threading.Thread(target=self._loop, name="embed-batcher", daemon=True)
            runner.start()
            self._threads.append(runner)

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._run(batch)
            except BaseException as exc:  # never leave a caller waiting
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                with self._cond:
                    self._running.remove(sum(len(item.texts) for item in batch))
                    self._cond.notify_all()  # a waiting runner's rule depends on this

    def _next_batch(self) -> list[_Pending]:
        """Block until a batch is due and take it: the budget is full, or the oldest request
        is ``wait_s`` old and either no batch runs or this one is at least their average."""
        with self._cond:
            while True:
                if not self._pending:
                    self._cond.wait()
                    continue
                oldest = self._pending[0]
                same = [p for p in self._pending if p.key == oldest.key]
                tokens = sum(p.tokens for p in same)
                texts = sum(len(p.texts) for p in same)
                if tokens >= self.token_budget or texts >= self.max_texts:
                    break
                left = oldest.born + self.wait_s - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                elif not self._running or texts * len(self._running) >= sum(self._running):
                    break
                else:
                    self._cond.wait()  # woken by a new request or a batch that ended
            batch, tokens, texts = [], 0, 0
            for item in same:
                fits = (
                    tokens + item.tokens <= self.token_budget
                    and texts + len(item.texts) <= self.max_texts
                )
                if batch and not fits:
                    break
                batch.append(item)
                tokens += item.tokens
                texts += len(item.texts)
            taken = {id(item) for item in batch}
            self._pending = [p for p in self._pending if id(p) not in taken]
            self._running.append(texts)
            self.most_running = max(self.most_running, len(self._running))
            return batch

    def _run(self, batch: list[_Pending]) -> None:
        key = batch[0].key
        texts = [t for item in batch for t in item.texts]
        started = time.perf_counter()
        try:
            rows, tokens = self._encode(key, texts)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.info(
                "a batch of %d requests failed (%s): running them one by one",
                len(batch),
                type(exc).__name__,
            )
            for item in batch:
                self._run([item])
            return
        elapsed = time.perf_counter() - started
        self.batches += 1
        log.info(
            "embed batch: %d requests, %d texts, %.1f ms", len(batch), len(texts), elapsed * 1000
        )
        # Each request's share of the batch's compute time, by the tokens it ran (usage
        # accounting: gpu_seconds_embedding); by its texts if no token was counted.
        total = sum(int(n) for n in tokens)
        at = 0
        for item in batch:
            n = len(item.texts)
            mine = tokens[at : at + n]
            share = sum(int(t) for t in mine) / total if total else n / len(texts)
            item.future.set_result((rows[at : at + n], mine, len(texts), elapsed * share))
            at += n
