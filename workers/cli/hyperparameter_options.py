"""Fine-tune options generated from the shared table (:mod:`embedding.training.hyperparameters`).

``embedctl finetune`` and ``embedctl jobs submit`` both take their hyper-parameter options
from here, so a flag, default or help text can never drift from the payload schema or the
core's ``TrainConfig``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from embedding.training.hyperparameters import (
    HYPERPARAMETERS,
    RECIPE_NAMES,
    describe_recipe_default,
)


def add_hyperparameter_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """One option per name. The recipe's settings (loss, epochs, lr, batch size) default to
    None: the recipe for the rows fills them once the data is read."""
    for name in names:
        h = HYPERPARAMETERS[name]
        options: dict[str, Any] = {"default": h.default, "help": f"{h.help} (default: {h.default})"}
        if name in RECIPE_NAMES:
            options = {
                "default": None,
                "help": f"{h.help} (default, by the rows: {describe_recipe_default(name)})",
            }
        if h.choices:
            options["choices"] = h.choices
        elif h.type is bool:  # --matryoshka / --no-matryoshka
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = h.type
        parser.add_argument(h.flag, dest=h.name, **options)


def hyperparameters_from(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}
