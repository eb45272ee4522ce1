"""Per-task LoRA adapters (jina-embeddings-v3): found beside the weights, chosen per call.

jina-embeddings-v3-hf ships its five task adapters as peft folders next to the base weights
(``retrieval_query/``, ``retrieval_passage/``, ``separation/``, ``classification/``,
``text_matching/``; each an ``adapter_config.json`` and an ``adapter_model.safetensors``).
The published model *is* base + the task's adapter: a task prompt on the bare base gives
other vectors. So a model whose spec declares task adapters loads all of them once, and each
``encode`` call switches to the adapter of its task (a pointer change, no weight copy).

Adapters get the same safety as base weights: safetensors only, headers validated first.
This module is a leaf of the core (it needs only :mod:`embedding.models.weights`): specs ask it
whether a folder has adapters, so it takes plain values, never a spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedding.models.weights import CorruptWeights, read_header, safetensors_files

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_name(task: str) -> str:
    """The folder (and peft adapter) name of a task: ``retrieval.query`` -> ``retrieval_query``."""
    return task.replace(".", "_").replace("-", "_")


def has_task_adapters(folder: Path) -> bool:
    """Cheap check (no validation): does any subfolder hold a peft adapter config?"""
    return folder.is_dir() and any(
        (sub / ADAPTER_CONFIG).is_file() for sub in folder.iterdir() if sub.is_dir()
    )


def find_task_adapters(folder: str | Path) -> dict[str, Path]:
    """Adapter name -> folder for every adapter subfolder, each header validated.

    An adapter whose weights are a pickle (``adapter_model.bin``) is refused like any other
    pickle (:func:`~embedding.models.weights.safetensors_files`); one without weights is corrupt.
    """
    folder = Path(folder)
    found: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not (sub / ADAPTER_CONFIG).is_file():
            continue
        weights = sub / ADAPTER_WEIGHTS
        if not weights.is_file():
            # The base weights' rule decides: pickle-only folders are refused, empty ones corrupt.
            safetensors_files(sub)
            raise CorruptWeights(f"{sub}: adapter has no {ADAPTER_WEIGHTS}")
        read_header(weights)
        found[sub.name] = sub
    return found


def attach_task_adapters(model: Any, adapters: dict[str, Path]) -> Any:
    """Wrap ``model`` in a peft model holding every adapter, frozen, for inference."""
    from peft import PeftModel

    names = sorted(adapters)
    wrapped = PeftModel.from_pretrained(
        model, str(adapters[names[0]]), adapter_name=names[0], is_trainable=False
    )
    for name in names[1:]:
        wrapped.load_adapter(str(adapters[name]), adapter_name=name, is_trainable=False)
    return wrapped.eval()


def adapter_for_task(model: str, adapters: Sequence[str], task: str | None) -> str:
    """The adapter a call with ``task`` must run on; a clear error when there is none.

    ``task`` is the call's task, or the model's default task when the call names none;
    ``model`` only names the model in the error.
    """
    if task is None:
        raise ValueError(
            f"model {model!r} has per-task adapters: name a task, one of {sorted(adapters)}"
        )
    name = adapter_name(task)
    if name not in adapters:
        raise ValueError(
            f"model {model!r} has no adapter for task {task!r}; adapters: {sorted(adapters)}"
        )
    return name
