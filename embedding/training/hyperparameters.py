"""Every fine-tune hyper-parameter a user may set, defined once: type, default, bounds, help.

Users set them in four places: the core's :class:`~embedding.training.config.TrainConfig`, the JSON
payload (``workers.schemas.FinetuneRequest``), the command line (``embedctl finetune``,
``embedctl jobs submit``) and the HTTP API's ``hyperparameters``. Each of them takes its
defaults and bounds from the table here, so a default changed here changes everywhere
(``tests/test_hyperparameters.py`` checks all of them against it).

Two kinds of bound: ``ge``/``gt`` say what can train at all and hold everywhere; ``cap`` is
the most a job submitted by *another service* may ask for (payload, HTTP), so a typo cannot
book a GPU for a year. A user training on their own machine (``embedctl finetune``, the
library) is trusted past the caps, as they are trusted to load any model folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type  # int, float, str or bool
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    ge: float | None = None  # inclusive lower bound
    gt: float | None = None  # exclusive lower bound
    cap: float | None = None  # inclusive upper bound for submitted jobs (see above)
    nullable: bool = False  # None is allowed (and means "off")

    @property
    def flag(self) -> str:
        """The command-line option: ``batch_size`` -> ``--batch-size``."""
        return "--" + self.name.replace("_", "-")

    def problem(self, value: Any, capped: bool = False) -> str | None:
        """Why ``value`` is not allowed (past the cap too, if ``capped``), in one sentence."""
        if value is None and self.nullable:
            return None
        if self.choices is not None:
            if value in self.choices:
                return None
            return f"{self.name} must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.type is bool:
            if isinstance(value, bool):
                return None
            return f"{self.name} must be true or false, got {value!r}"
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{self.name} must be an integer, got {value!r}"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"{self.name} must be a number, got {value!r}"
        elif not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value!r}"
        too_low = (self.ge is not None and value < self.ge) or (
            self.gt is not None and value <= self.gt
        )
        if too_low or (capped and self.cap is not None and value > self.cap):
            return f"{self.name} must be {self.describe_bounds(capped)}, got {value!r}"
        return None

    def describe_bounds(self, capped: bool = False) -> str:
        """``a positive integer <= 1000``, ``a finite number > 0 and <= 1``, ..."""
        if self.type is int and self.ge == 1:
            head, limits = "a positive integer", []
        else:
            head = "an integer" if self.type is int else "a finite number"
            limits = [f">= {self.ge:g}"] if self.ge is not None else []
            limits += [f"> {self.gt:g}"] if self.gt is not None else []
        limits += [f"<= {self.cap:g}"] if capped and self.cap is not None else []
        text = f"{head} {' and '.join(limits)}".strip()
        return text + (" or None" if self.nullable else "")


LOSS = Hyperparameter(
    "loss",
    str,
    "triplet",
    "triplet: (anchor, positive, negative) rows; mnrl: in-batch negatives, pairs or triplets; "
    "cached_mnrl: mnrl with GradCache, a big batch in the memory of mini_batch_size texts",
    choices=("triplet", "mnrl", "cached_mnrl"),
)
EPOCHS = Hyperparameter("epochs", int, 3, "passes over the training data", ge=1, cap=1000)
LR = Hyperparameter("lr", float, 2e-5, "peak learning rate (AdamW)", gt=0, cap=1.0)
BATCH_SIZE = Hyperparameter("batch_size", int, 16, "rows per optimizer step", ge=1, cap=4096)
# Cosine distance lives in [0, 2]. sentence-transformers' TripletLoss default margin of 5 is
# meant for Euclidean distance on unnormalized vectors; with cosine distance on unit vectors
# a margin of 5 can never be met, so the loss never reaches zero and stops meaning "the
# negative is far enough". 0.5 asks for the negative to be half a unit of cosine distance
# further than the positive: reachable, but not reached by an untrained model on related code.
MARGIN = Hyperparameter(
    "margin",
    float,
    0.5,
    "triplet loss margin, in cosine distance",
    gt=0,
    cap=2.0,
)
SEED = Hyperparameter("seed", int, 0, "seed of data order, dropout and initialisation")
MAX_TOKENS = Hyperparameter(
    "max_tokens",
    int,
    None,
    "cap sequence length while training (speed); evaluation is uncapped",
    ge=4,
    nullable=True,
)

# cached_mnrl only. Texts per forward pass: memory follows it, the in-batch negatives follow
# batch_size. 32 as sentence-transformers' CachedMultipleNegativesRankingLoss. The cap is
# batch_size's: a mini-batch larger than the batch is the whole batch.
MINI_BATCH_SIZE = Hyperparameter(
    "mini_batch_size",
    int,
    32,
    "cached_mnrl: texts per forward pass (memory); batch_size sets the in-batch negatives",
    ge=1,
    cap=4096,
)
MATRYOSHKA = Hyperparameter(
    "matryoshka",
    bool,
    False,
    "also train at each Matryoshka dim of the model's spec (truncated, renormalized); "
    "only for specs that declare them",
)

# Both act on the per-epoch evaluation, which runs only with a validation set (the trainer's
# ``eval_examples``, a job's ``validation_*`` field, the API's ``validation_file``): without
# one there is nothing to choose by, so patience > 0 is refused and select_best_epoch is moot.
EARLY_STOPPING_PATIENCE = Hyperparameter(
    "early_stopping_patience",
    int,
    0,
    "stop after this many epochs without a gain in the validation metric "
    "(MRR@10 for pairs, triplet accuracy for triplets); 0: off; needs a validation set",
    ge=0,
    cap=1000,
)
SELECT_BEST_EPOCH = Hyperparameter(
    "select_best_epoch",
    bool,
    True,
    "export the epoch with the best validation metric instead of the last (with a validation set)",
)

# The levers of issue 37 (a better model from one team's codebase; benchmarks/codesearch_repos.py
# measures each against the recipe without it). All three act on MNRL and cost no data prep
# from the user: the trainer does the work inside the job, with the model it starts from.
SYMMETRIC_LOSS = Hyperparameter(
    "symmetric_loss",
    bool,
    False,
    "mnrl: also score each positive against every anchor (code -> query as well as query -> "
    "code), sentence-transformers' MultipleNegativesSymmetricRankingLoss",
)
HARD_NEGATIVES = Hyperparameter(
    "hard_negatives",
    int,
    0,
    "pairs: mine this many hard negatives per pair from the training data itself with the "
    "starting model before training (a candidate scored near or above the positive is "
    "skipped as a likely false negative); 0: off",
    ge=0,
    cap=8,
)
GUIDED_FILTER = Hyperparameter(
    "guided_filter",
    bool,
    False,
    "mnrl: drop in-batch candidates the starting model scores near or above the anchor's own "
    "positive (likely unlabelled positives), GISTEmbed's guided filtering with the starting "
    "model as the guide",
)
HARD_BATCHES = Hyperparameter(
    "hard_batches",
    bool,
    False,
    "mnrl: fill each batch with pairs whose code the starting model finds alike, so the "
    "in-batch negatives are the hard ones (TAS-B's topic-aware sampling); no extra texts",
)

# Issue 37's levers, as the trainer, the API and the CLI's summary name them.
LEVERS = ("symmetric_loss", "hard_negatives", "guided_filter", "hard_batches")

# Not a user setting but the trainer's own knob (``TrainConfig.eval_sample_rows``), here so
# the CLI's help can quote it without importing torch: without a validation set, "before
# and after" is measured on at most this many training rows (seeded), enough for a stable
# MRR@10 or accuracy at a fixed cost however large the training set is.
DEFAULT_EVAL_SAMPLE_ROWS = 256

HYPERPARAMETERS: dict[str, Hyperparameter] = {
    h.name: h
    for h in (
        LOSS,
        EPOCHS,
        LR,
        BATCH_SIZE,
        MARGIN,
        SEED,
        MAX_TOKENS,
        MINI_BATCH_SIZE,
        MATRYOSHKA,
        EARLY_STOPPING_PATIENCE,
        SELECT_BEST_EPOCH,
        SYMMETRIC_LOSS,
        HARD_NEGATIVES,
        GUIDED_FILTER,
        HARD_BATCHES,
    )
}


# The default recipe, by the kind of rows. What a run trains with for the loss, epochs, lr
# and batch size its caller leaves unset (None): a plain `embedctl finetune --data`, a job
# submitted by payload or through the HTTP API. Triplets keep the table's defaults above.
# Pairs (and n-tuples: a pair with hard negatives) get the recipe that lifted code search
# most on held-out files of a broad corpus (benchmarks/codesearch.py, issue 26; figures in
# benchmarks/RESULTS.md), with the best epoch kept on the validation set when one is given.
RECIPE_NAMES = (
    "loss",
    "epochs",
    "lr",
    "batch_size",
    "symmetric_loss",
    "hard_negatives",
    "guided_filter",
    "hard_batches",
)
# Measured on the Xeon with AMX (2 cores), minilm, 8,263 pairs of five languages: MRR@10
# 0.738 -> 0.872 on held-out files (+18.1 %, every language up); the table's lr and batch
# on the same pairs gave +16.1 % and trained slower per pair (RESULTS.md has both).
# Issue 37's levers (symmetric loss, mined hard negatives, the guided filter, hard batches)
# and 3 epochs or lr 1e-4 on small data were each measured against this recipe per
# repository (benchmarks/codesearch_repos.py: five codebases, 700-1,600 pairs each): none
# won across them, so they stay off here and a user turns them on (RESULTS.md, 2026-12-07).
PAIRS_RECIPE: dict[str, Any] = {
    "loss": "mnrl",
    "epochs": 2,
    "lr": 5e-5,
    "batch_size": 32,
    "symmetric_loss": False,
    "hard_negatives": 0,
    "guided_filter": False,
    "hard_batches": False,
}


def recipe_for(row_width: int) -> dict[str, Any]:
    """The default recipe settings for rows of this width (2: pairs, 3: triplets, more: a
    pair with hard negatives). Rows that bring their own negatives mine none."""
    if row_width == 3:
        return {name: HYPERPARAMETERS[name].default for name in RECIPE_NAMES}
    recipe = dict(PAIRS_RECIPE)
    if row_width > 2:
        recipe["hard_negatives"] = 0
    return recipe


def with_recipe(values: dict[str, Any], row_width: int) -> dict[str, Any]:
    """``values`` with each recipe setting that is missing or None taken from the recipe for
    the rows; what the caller set is kept."""
    recipe = recipe_for(row_width)
    filled = dict(values)
    for name in RECIPE_NAMES:
        if filled.get(name) is None:
            filled[name] = recipe[name]
    return filled


def describe_recipe_default(name: str) -> str:
    """``pairs: 2; triplets: 3`` for help texts."""
    return f"pairs: {PAIRS_RECIPE[name]}; triplets: {HYPERPARAMETERS[name].default}"


def problems(values: dict[str, Any], capped: bool = False) -> list[str]:
    """Every problem among ``values`` (names from the table), in table order."""
    found = (HYPERPARAMETERS[n].problem(values[n], capped) for n in HYPERPARAMETERS if n in values)
    return [p for p in found if p]
