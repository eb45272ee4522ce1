"""Concurrent ``/v1/embeddings`` calls for the same model and settings become one task.

The first call of a group is its leader: it waits until the group is ``wait_s`` old or
full (the encoder's token budget, or the per-request text cap), closes it, sends one
``embedding.embed`` task with every member's texts, and hands each member its own rows
(and token counts, and its share of the task's compute time), in order. Calls that arrive
while a group is open join it; a call that would overflow it starts the next one.

A task that fails for a group of several calls is sent again once per call, so a request
the worker refuses fails alone and the others still get their rows.

With ``max_in_flight``, a group that is not full is also held while that many tasks of its
key are out, and grows meanwhile: for a worker that runs one task at a time (the embedded
mode's solo thread), a 2 ms window alone sends a stream of one-text tasks that queue behind
each other, where holding the group sends one batch per task the worker finishes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from workers.serving.embed_batching import estimated_tokens

# send(key, texts) -> the task's reply: {"matrix": (rows x dim) float32, "tokens": [...], ...}
Send = Callable[[Hashable, list[str]], dict[str, Any]]


@dataclass
class _Group:
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    members: list[tuple[int, int]] = field(default_factory=list)  # (offset, count)
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    failed: bool = False


class Coalescer:
    def __init__(
        self,
        send: Send,
        wait_s: float,
        token_budget: int,
        max_texts: int,
        max_in_flight: int | None = None,
    ) -> None:
        self._send = send
        self.wait_s = wait_s
        self.token_budget = token_budget
        self.max_texts = max_texts
        self.max_in_flight = max_in_flight
        self._open: dict[Hashable, _Group] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a group filled or a task returned

    def embed(self, key: Hashable, texts: list[str]) -> dict[str, Any]:
        """This call's slice of its group's reply: ``matrix`` rows and ``tokens`` are its own."""
        tokens = estimated_tokens(texts)
        with self._lock:
            group = self._open.get(key)
            leader = group is None or len(group.texts) + len(texts) > self.max_texts
            if leader:
                group = _Group()
                self._open[key] = group
            assert group is not None
            member = (len(group.texts), len(texts))
            group.members.append(member)
            group.texts.extend(texts)
            group.tokens += tokens
            if group.tokens >= self.token_budget or len(group.texts) >= self.max_texts:
                group.full.set()
                self._changed.notify_all()
        if leader:
            self._lead(key, group)
        else:
            group.done.wait()
        if group.failed or group.reply is None:  # the shared task failed: this call alone
            with self._sending(key):
                return self._send(key, texts)
        return _slice(group.reply, *member)

    def _lead(self, key: Hashable, group: _Group) -> None:
        group.full.wait(self.wait_s)
        with self._lock:
            while (
                self.max_in_flight is not None
                and self._in_flight.get(key, 0) >= self.max_in_flight
                and not group.full.is_set()
            ):
                self._changed.wait()
            if self._open.get(key) is group:
                del self._open[key]
        try:
            if len(group.members) == 1:
                return  # alone: the caller sends its own request (its errors are its own)
            with self._sending(key):
                group.reply = self._send(key, group.texts)
        except Exception:
            group.failed = True
        finally:
            group.done.set()

    @contextlib.contextmanager
    def _sending(self, key: Hashable) -> Iterator[None]:
        """Count a task of ``key`` as out while it is; its end wakes the groups held for it."""
        with self._lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]
                self._changed.notify_all()


def _slice(reply: dict[str, Any], offset: int, count: int) -> dict[str, Any]:
    """A member's rows and tokens, and its share of the task's ``compute_s`` (by its tokens:
    the worker splits a batch's time the same way among the tasks it merged)."""
    tokens = list(reply.get("tokens") or [])
    mine = tokens[offset : offset + count]
    total = sum(tokens)
    share = sum(mine) / total if total else count / max(1, len(tokens) or count)
    return {
        **reply,
        "rows": count,
        "matrix": reply["matrix"][offset : offset + count],
        "tokens": mine,
        "compute_s": float(reply.get("compute_s") or 0.0) * share,
    }
