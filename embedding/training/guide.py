"""The starting model as a guide: hard negatives from the training data, and which in-batch
candidates are likely false negatives (issue 37: a better model from one team's codebase).

Before the first step, the model the run starts from embeds every distinct text of the
training rows once (:func:`prepare`). Those vectors serve two levers of the recipe:

- **Hard negatives** (``hard_negatives`` = k): each pair gets the k hardest texts of the
  *same data* that the starting model ranks close to its anchor, through the miner of
  ``embedctl data mine-negatives`` (:mod:`embedding.training.mining`, n-tuple rows), with its
  false-negative guard: a candidate scored above ``positive - GUARD_MARGIN`` is skipped as
  likely another right answer (a copied function, an overload, a wrapper). In one codebase the
  in-batch negatives are random functions of the same repository; the mined ones are the
  functions a query is actually confused with, which is what held-out search within that
  repository has to tell apart. A pair for which no valid candidate is left keeps its row
  with another pair's positive drawn at random (seeded) in place of the missing negative:
  no pair is dropped, and every row has the same width.
- **Guided filter** (``guided_filter``, GISTEmbed, Solatorio 2024): in each batch, a
  candidate (another row's positive or negative) that the guide scores above the anchor's
  own positive minus ``GUARD_MARGIN`` is removed from the anchor's softmax instead of being
  pushed away. GISTEmbed uses a separate, stronger guide; here the guide is the starting
  model itself, so no second model is loaded and the masks cost a lookup and one small
  product per batch. The same margin as the miner's guard: one rule for "too close to be a
  negative" in both places.

- **Hard batches** (``hard_batches``, TAS-B's topic-aware sampling, Hofstätter et al.
  2021): each epoch's batches are filled with pairs whose code the starting model finds
  alike (:func:`similar_batches`), so the in-batch negatives of a query are the functions
  it is confused with, as mined negatives are, at no extra text per step: a mined negative
  is one more code text to embed per pair (on code, about 2x the step), a hard batch none.

Everything here depends on the data, the starting model and the seed only, so a resumed
run prepares the same rows (the loop prepares before loading a checkpoint). The time it
takes is reported (``seconds``) and counts as training time in the benchmark.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from embedding.data.examples import Example
from embedding.training.mining import MiningConfig, mine_hard_negatives

GUARD_MARGIN = MiningConfig.margin  # 0.05 of cosine: "near or above the positive"
MINING_POOL = 10  # MiningConfig.top_k: the hardest valid candidates considered


class GuideVectors:
    """Unit vectors of the starting model for a fixed set of texts, looked up by text.

    Also an ``encode(texts)`` for the miner, so mining costs no second pass over texts
    already embedded."""

    def __init__(self, encoder: Any, texts: Sequence[str]) -> None:
        distinct = list(dict.fromkeys(texts))
        vectors = np.asarray(encoder.encode(distinct), dtype=np.float32)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.matrix = torch.from_numpy(vectors / norms)
        self.index = {text: i for i, text in enumerate(distinct)}

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self.matrix[[self.index[t] for t in texts]].numpy()

    def of(self, texts: Sequence[str]) -> torch.Tensor:
        return self.matrix[[self.index[t] for t in texts]]


def guided_mask(
    guide: GuideVectors, columns: Sequence[Sequence[str]], margin: float = GUARD_MARGIN
) -> torch.Tensor | None:
    """Which in-batch candidates the guide scores above ``own positive - margin`` (None:
    none). ``columns``: anchors, positives[, negatives...]; candidates are the positives,
    then each negative column, as the MNRL loss orders them. The anchor's own positive is
    never masked; its own mined negative is below the guard already (the miner's rule)."""
    anchors = guide.of(columns[0])
    candidates = guide.of([text for column in columns[1:] for text in column])
    scores = anchors @ candidates.T
    n = len(columns[0])
    own = scores[torch.arange(n), torch.arange(n)]
    mask = scores > (own - margin)[:, None]
    mask[torch.arange(n), torch.arange(n)] = False
    return mask if bool(mask.any()) else None


@dataclass
class Prepared:
    """The rows the run trains on, the guide (None when no lever needs it), what was done."""

    rows: list[Example]
    guide: GuideVectors | None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    mining: dict[str, Any] = field(default_factory=dict)


def needs_guide(config: Any) -> bool:
    return bool(config.hard_negatives or config.guided_filter or config.hard_batches)


def similar_batches(
    vectors: torch.Tensor, batch_size: int, seed: int, epoch: int, share: float = 1.0
) -> list[list[int]]:
    """This epoch's batches of alike rows: in a seeded random order, each row not yet placed
    opens a batch and takes its nearest unplaced rows (cosine of unit ``vectors``) up to
    ``share`` of the batch; random unplaced rows fill the rest (``share`` 1: all alike).

    A function of ``(vectors, seed, epoch)``, so resume repeats it; as many batches as
    :func:`~embedding.training.steps.epoch_batches` gives (a lone last row joins the batch
    before), so the schedule is the same. ``n / batch_size`` products of one row against
    all: 10k rows of 384 dims at batch 32 is about a GFLOP, well under a second."""
    n = vectors.shape[0]
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    alike = max(1, min(batch_size, round(share * batch_size)))
    free = torch.ones(n, dtype=torch.bool)
    batches: list[list[int]] = []
    for row in order:
        if not free[row]:
            continue
        scores = vectors @ vectors[row]
        scores[~free] = -torch.inf
        scores[row] = torch.inf  # the row that opens the batch is in it
        take = torch.topk(scores, min(alike, int(free.sum()))).indices
        free[take] = False
        batch = take.tolist()
        rest = torch.nonzero(free).flatten() if len(batch) < batch_size else []
        if len(rest):  # share < 1: random unplaced rows fill the batch
            picked = rest[torch.randperm(len(rest), generator=generator)[: batch_size - len(batch)]]
            free[picked] = False
            batch += picked.tolist()
        batches.append(batch)
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


def prepare(encoder: Any, rows: Sequence[Example], config: Any) -> Prepared:
    """Embed the rows' texts with the starting model; mine ``config.hard_negatives`` per
    pair; keep the vectors for the guided filter and the hard batches. Nothing is embedded
    and the rows are unchanged when no lever is on (the default recipe)."""
    if not needs_guide(config):
        return Prepared(list(rows), None)
    started = time.perf_counter()
    was_training = encoder.model.training
    encoder.model.eval()
    with torch.no_grad():
        guide = GuideVectors(encoder, [text for row in rows for text in row])
    encoder.model.train(was_training)
    prepared = Prepared(list(rows), guide)
    if config.hard_negatives:
        prepared.rows, prepared.mining = _mine(guide, rows, config.hard_negatives, config.seed)
        stats = prepared.mining
        prepared.notes.append(
            f"mined {config.hard_negatives} hard negative(s) per pair from the training data "
            f"with the starting model: {stats['anchors_mined']} of {stats['anchors']} anchors; "
            f"{stats['skipped_false_negatives']} candidates skipped as likely false "
            f"negatives (within {GUARD_MARGIN:g} of the positive); "
            f"{stats['rows_filled_at_random']} rows short of candidates took random ones"
        )
    if config.hard_batches:
        prepared.notes.append(
            "hard batches on: each batch holds pairs whose code the starting model finds alike"
        )
    if config.guided_filter:
        prepared.notes.append(
            "guided filter on: in-batch candidates the starting model scores within "
            f"{GUARD_MARGIN:g} of the positive or above it are not counted as negatives"
        )
    prepared.seconds = time.perf_counter() - started
    return prepared


def _mine(
    guide: GuideVectors, rows: Sequence[Example], k: int, seed: int
) -> tuple[list[Example], dict[str, Any]]:
    """n-tuples (anchor, positive, k negatives) in the rows' order; none dropped."""
    config = MiningConfig(num_negatives=k, top_k=max(MINING_POOL, k), output_format="triplet")
    mined = mine_hard_negatives([(a, p) for a, p, *_ in rows], guide, config)
    negatives: dict[tuple[str, str], list[str]] = {}
    for anchor, positive, negative in mined.triplets:
        negatives.setdefault((anchor, positive), []).append(negative)
    positives = list(dict.fromkeys(row[1] for row in rows))
    rng = random.Random(seed)
    out: list[Example] = []
    filled = 0
    for anchor, positive, *_ in rows:
        found = list(negatives.get((anchor, positive), []))[:k]
        if len(found) < k:
            filled += 1
            others = [p for p in positives if p != positive and p not in found]
            found += rng.sample(others, min(k - len(found), len(others)))
            while len(found) < k:  # a data set of fewer than k + 1 distinct positives
                found.append(found[-1] if found else positive)
        out.append((anchor, positive, *found))
    return out, {**mined.stats.as_dict(), "rows_filled_at_random": filled}
