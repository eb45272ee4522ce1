"""Hard-negative mining: (anchor, positive) pairs -> (anchor, positive, negative) triplets.

The base model embeds every distinct anchor and a corpus (every distinct positive, plus an
optional extra corpus); each anchor's candidates are the corpus texts ranked by cosine, and
its negatives are the highest-ranked candidates that pass three rules, as
sentence-transformers' ``mine_hard_negatives`` (``output_format="triplet"``) does:

1. **Never a positive.** A candidate is skipped when its text is the positive of the row, or
   of any row with the same anchor text (the corpus is deduplicated by text, so a copy of a
   positive is the positive itself), or the anchor's own text.
2. **The false-negative guard.** A candidate scored ``> positive score - margin`` is skipped
   (the lowest positive score when an anchor has several, as ST does): one that close to the
   positive, or above it, is as likely an unlabelled positive (a copied function, a near
   duplicate) as a negative, and training against it teaches the model to push a right
   answer away. ``max_score`` optionally also skips any candidate above an absolute cosine.
3. **The hardest first.** Among the candidates left, the ``top_k`` highest-scoring form the
   pool; ``sampling="top"`` takes its ``num_negatives`` best, ``"random"`` draws them from
   the pool with ``seed``.

The subset of ST's knobs kept, and why:

- ``margin`` (ST ``absolute_margin``) is the guard. ST's ``relative_margin`` (a percentage of
  the positive's score, NV-Retriever's "TopK-PercPos") is the same idea in other units: for
  one model on unit vectors an absolute cosine is easier to reason about, and it has no sign
  trap when a positive scores below zero (ST issue #3819).
- ``max_score`` is kept: cheap, and it catches near-duplicates of *any* text when the margin
  is off.
- ``range_min`` (skip the n best-ranked candidates of every anchor, whatever their scores) is
  left out: it throws away the hardest true negatives of every anchor alike, and the
  NV-Retriever ablation found positive-aware thresholds (the margin) better than that shift.
- ``range_max``, ST's rank window, is applied *after* the guard here (``top_k``: the pool is
  the k best *valid* candidates), not before it. Applied before, every candidate in a window
  of 50 ranks above the positive whenever the base model ranks the positive past 50, and the
  anchor is dropped: on the 2,636 stdlib code-search pairs with minilm and a 0.05 margin that
  drops 17 % of the anchors (37 % with ST's default window of 11), exactly those the base
  model gets most wrong and training most needs. After the guard, such an anchor keeps a
  negative just below its positive. Nothing is lost on the anchors the model ranks well:
  their pool is the same.

Two output formats, ST's names:

- ``"triplet"`` (the default): each kept negative is one output row (anchor, positive,
  negative), in input order, hardest first; ``num_negatives`` > 1 multiplies the rows, and
  so the steps of an epoch.
- ``"n-tuple"``: one row per pair, (anchor, positive, negative 1, ..., negative n), hardest
  first. The epoch keeps its rows and steps; each anchor of a batch is scored against
  n hard negatives of every row instead of one.

An anchor with no valid candidate at all is dropped (our data files cannot mix pairs and
triplets; :class:`MiningStats` counts them). An anchor with fewer than ``num_negatives``
valid candidates keeps the ones it has as triplets, and is dropped from n-tuples (every row
of a file has as many texts).

Scoring is chunked by anchors: one ``chunk_size x len(corpus)`` float32 block at a time (for
a 10k corpus and chunks of 1,024 anchors, 40 MB), so 10k x 10k never holds the full matrix.
The result depends on the data, the model and the seed only, not on the chunk size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from embedding.data.examples import DataError, Example, validate_examples

if TYPE_CHECKING:
    import numpy as np

SAMPLING = ("top", "random")
OUTPUT_FORMATS = ("triplet", "n-tuple")


class _Encodes(Protocol):
    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any: ...


# ``progress(description, total)`` returns something with ``update(n)`` and ``close()``
# (a tqdm bar, say): the core shows no progress of its own.
ProgressFactory = Callable[[str, int], Any]


@dataclass(frozen=True)
class MiningConfig:
    """How to mine; see the module docstring for what each rule is for."""

    num_negatives: int = 1  # negatives per input pair (rows or columns: output_format)
    top_k: int = 10  # the pool: this many of the hardest valid candidates
    margin: float | None = 0.05  # skip candidates scored > positive - margin; None: no guard
    max_score: float | None = None  # skip candidates scored > this cosine; None: no cap
    sampling: str = "top"  # "top": the hardest of the pool; "random": drawn from it
    seed: int = 0  # of "random" sampling
    chunk_size: int = 1024  # anchors scored per block (memory, not results)
    output_format: str = "triplet"  # a row per negative, or "n-tuple": a row per pair

    def check(self) -> None:
        """Refuse settings that cannot mine, all problems in one message."""
        problems = []

        def integer(name: str, value: object, low: int) -> bool:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
                return False
            return True

        def number(name: str, value: object, low: float, high: float) -> None:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and low <= value <= high):  # type: ignore[arg-type]
                problems.append(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")

        counts_ok = integer("num_negatives", self.num_negatives, 1)
        counts_ok = integer("top_k", self.top_k, 1) and counts_ok
        if counts_ok and self.top_k < self.num_negatives:
            problems.append(
                f"top_k ({self.top_k}) must be at least num_negatives ({self.num_negatives})"
            )
        integer("chunk_size", self.chunk_size, 1)
        integer("seed", self.seed, 0)
        if self.margin is not None:
            number("margin", self.margin, 0.0, 2.0)
        if self.max_score is not None:
            number("max_score", self.max_score, -1.0, 1.0)
        if self.sampling not in SAMPLING:
            problems.append(f"sampling must be 'top' or 'random', got {self.sampling!r}")
        if self.output_format not in OUTPUT_FORMATS:
            problems.append(
                f"output_format must be 'triplet' or 'n-tuple', got {self.output_format!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class MiningStats:
    """What a mining run did, for the summary line (all counts; scores are cosines)."""

    pairs: int = 0  # input rows
    anchors: int = 0  # distinct anchor texts
    corpus: int = 0  # distinct candidate texts (positives and the extra corpus)
    triplets: int = 0  # output rows (triplets or n-tuples)
    anchors_mined: int = 0  # anchors with at least one negative
    anchors_short: int = 0  # of those, with fewer than num_negatives (n-tuple: dropped)
    anchors_dropped: int = 0  # anchors with no valid candidate: their rows are left out
    pairs_dropped: int = 0  # input rows of the dropped anchors
    skipped_false_negatives: int = 0  # candidates the guard skipped (margin or max_score)
    anchors_guarded: int = 0  # anchors whose best-scoring candidate the guard skipped
    mean_positive_score: float = 0.0  # over kept rows
    mean_negative_score: float = 0.0  # over output rows

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Mined:
    triplets: list[Example]  # the output rows: triplets, or n-tuples with output_format
    stats: MiningStats


def check_pairs(pairs: Sequence[Sequence[str]], where: str = "row") -> list[Example]:
    """Pairs only: triplets already have a negative, and mining would silently replace it."""
    rows = validate_examples(pairs, where=where)
    if len(rows[0]) != 2:
        raise DataError(
            f"the {where}s are triplets (anchor, positive, negative) already: "
            "mining takes (anchor, positive) pairs"
        )
    return rows


def mine_hard_negatives(
    pairs: Sequence[Sequence[str]],
    encoder: _Encodes,
    config: MiningConfig | None = None,
    corpus: Sequence[str] = (),
    progress: ProgressFactory | None = None,
) -> Mined:
    """Triplets from ``pairs``, negatives mined with ``encoder`` from the positives + ``corpus``.

    ``encoder`` is anything with ``encode(texts) -> unit vectors`` (an :class:`Encoder`);
    data and settings are checked before it is first called.
    """
    config = config or MiningConfig()
    config.check()
    rows = check_pairs(pairs)
    for i, text in enumerate(corpus):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"corpus text {i} is not a non-empty string: {text!r}")

    # Distinct texts, in first-seen order (the extra corpus first, as ST orders it).
    texts = list(dict.fromkeys([*corpus, *(positive for _, positive in rows)]))
    text_index = {text: i for i, text in enumerate(texts)}
    anchors = list(dict.fromkeys(anchor for anchor, _ in rows))
    anchor_index = {anchor: i for i, anchor in enumerate(anchors)}
    positives_of: list[list[int]] = [[] for _ in anchors]
    for anchor, positive in rows:
        found = positives_of[anchor_index[anchor]]
        if text_index[positive] not in found:
            found.append(text_index[positive])
    own_text = [text_index.get(anchor, -1) for anchor in anchors]

    anchor_vectors = _encode(encoder, anchors, "embed anchors", progress)
    corpus_vectors = _encode(encoder, texts, "embed corpus", progress)
    picks, pick_scores, positive_scores, stats = mine_from_vectors(
        anchor_vectors, corpus_vectors, positives_of, own_text, config, progress
    )

    n_tuples = config.output_format == "n-tuple"
    triplets: list[Example] = []
    kept_positive: list[float] = []
    kept_negative: list[float] = []
    for anchor, positive in rows:
        a = anchor_index[anchor]
        if not picks[a] or (n_tuples and len(picks[a]) < config.num_negatives):
            stats.pairs_dropped += 1
            continue
        kept_positive.append(positive_scores[a][positives_of[a].index(text_index[positive])])
        kept_negative.extend(pick_scores[a])
        if n_tuples:
            triplets.append((anchor, positive, *(texts[n] for n in picks[a])))
        else:
            triplets.extend((anchor, positive, texts[n]) for n in picks[a])
    stats.pairs, stats.anchors, stats.corpus = len(rows), len(anchors), len(texts)
    stats.triplets = len(triplets)
    if kept_positive:
        stats.mean_positive_score = sum(kept_positive) / len(kept_positive)
        stats.mean_negative_score = sum(kept_negative) / len(kept_negative)
    return Mined(triplets, stats)


def _encode(encoder: _Encodes, texts: list[str], what: str, progress: ProgressFactory | None):
    import numpy as np

    if progress is None:
        vectors = encoder.encode(texts)
    else:
        bar = progress(what, len(texts))
        try:
            vectors = encoder.encode(texts, progress=bar)
        finally:
            bar.close()
    vectors = np.asarray(vectors, dtype=np.float32)
    # Unit rows, so a dot product is the cosine whatever the encoder was asked for.
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def mine_from_vectors(
    anchor_vectors: np.ndarray,
    corpus_vectors: np.ndarray,
    positives_of: Sequence[Sequence[int]],
    own_text: Sequence[int],
    config: MiningConfig,
    progress: ProgressFactory | None = None,
) -> tuple[list[list[int]], list[list[float]], list[list[float]], MiningStats]:
    """The numeric core on unit vectors: per anchor, the chosen corpus indices (hardest
    first), their scores, the scores of its positives, and the counts.

    ``positives_of[a]``: corpus indices of anchor ``a``'s positives; ``own_text[a]``: the
    corpus index of the anchor's own text, or -1.
    """
    import numpy as np
    import torch

    config.check()
    anchors_t = torch.from_numpy(np.ascontiguousarray(anchor_vectors, dtype=np.float32))
    corpus_t = torch.from_numpy(np.ascontiguousarray(corpus_vectors, dtype=np.float32))
    n_anchors, n_corpus = anchors_t.shape[0], corpus_t.shape[0]
    k = min(config.top_k, n_corpus)
    n = config.num_negatives

    # Each anchor's positives, scored by the same dot product as the candidates.
    flat_anchor = torch.tensor([a for a, ps in enumerate(positives_of) for _ in ps])
    flat_positive = torch.tensor([p for ps in positives_of for p in ps])
    flat_scores = (anchors_t[flat_anchor] * corpus_t[flat_positive]).sum(dim=1)
    positive_scores: list[list[float]] = []
    cursor = 0
    for ps in positives_of:
        positive_scores.append(flat_scores[cursor : cursor + len(ps)].tolist())
        cursor += len(ps)
    lowest_positive = torch.tensor([min(s) for s in positive_scores])
    threshold = torch.full((n_anchors,), math.inf)
    if config.margin is not None:
        threshold = lowest_positive - config.margin
    if config.max_score is not None:
        threshold = threshold.clamp(max=config.max_score)

    # Which cells are never candidates: (anchor, corpus index) of positives and own texts.
    never = [(a, p) for a, ps in enumerate(positives_of) for p in ps]
    never += [(a, t) for a, t in enumerate(own_text) if t >= 0]
    never.sort()
    never_rows = torch.tensor([a for a, _ in never], dtype=torch.long)
    never_cols = torch.tensor([c for _, c in never], dtype=torch.long)

    rng = np.random.default_rng(config.seed)
    stats = MiningStats()
    picks: list[list[int]] = []
    pick_scores: list[list[float]] = []
    bar = progress("score candidates", n_anchors) if progress else None
    try:
        for start in range(0, n_anchors, config.chunk_size):
            stop = min(start + config.chunk_size, n_anchors)
            scores = anchors_t[start:stop] @ corpus_t.T
            inside = (never_rows >= start) & (never_rows < stop)
            scores[never_rows[inside] - start, never_cols[inside]] = -math.inf

            guarded = scores > threshold[start:stop, None]  # -inf is never above
            stats.skipped_false_negatives += int(guarded.sum())
            best = scores.max(dim=1).values
            stats.anchors_guarded += int((best > threshold[start:stop]).sum())
            scores[guarded] = -math.inf

            pool_scores, pool_index = torch.topk(scores, k, dim=1)  # hardest first
            valid = torch.isfinite(pool_scores).numpy()
            if config.sampling == "random":
                keys = rng.random(valid.shape)
                keys[~valid] = np.inf
                chosen = np.sort(np.argsort(keys, axis=1, kind="stable")[:, :n], axis=1)
            else:
                chosen = np.broadcast_to(np.arange(min(n, k)), (stop - start, min(n, k)))
            chosen_valid = np.take_along_axis(valid, chosen, axis=1)
            chosen_index = np.take_along_axis(pool_index.numpy(), chosen, axis=1)
            chosen_scores = np.take_along_axis(pool_scores.numpy(), chosen, axis=1)
            for row in range(stop - start):
                keep = chosen_valid[row]
                picks.append(chosen_index[row][keep].tolist())
                pick_scores.append(chosen_scores[row][keep].tolist())
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()

    for chosen_row in picks:
        if not chosen_row:
            stats.anchors_dropped += 1
        else:
            stats.anchors_mined += 1
            stats.anchors_short += len(chosen_row) < n
    return picks, pick_scores, positive_scores, stats
