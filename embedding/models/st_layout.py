"""The sentence-transformers folder layout, read and written.

A sentence-transformers model folder is a transformers folder plus a few JSON files:
``modules.json`` (the pipeline: Transformer -> Pooling -> Normalize), ``1_Pooling/config.json``
(which pooling, :mod:`embedding.models.pooling`), ``config_sentence_transformers.json`` (named
prompts), ``sentence_bert_config.json`` (the token limit). We read them so a folder from the
hub or from ``SentenceTransformer.save`` needs no hand-written spec, and we write them on
export so that both ``SentenceTransformer(path)`` and our registry open a fine-tuned model.

No torch at import time: specs read folders with this module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedding.models.file_modes import apply_umask
from embedding.models.pooling import config_for, dimension_from_config, mode_from_config

if TYPE_CHECKING:
    import torch


def read_sentence_transformers_files(folder: Path) -> dict:
    """Pooling, width, prompts, token limit and normalization from a sentence-transformers folder.

    Returns an empty dict when the folder has no ``modules.json``.
    """
    modules = read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return {}
    found: dict = {"normalize": False}
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            pool_cfg = read_json(folder / module.get("path", "1_Pooling") / "config.json") or {}
            found["dim"] = dimension_from_config(pool_cfg)
            mode = mode_from_config(pool_cfg)
            if mode is not None:
                found["pooling"] = mode
        elif kind.endswith("Normalize"):
            found["normalize"] = True
    st_cfg = read_json(folder / "config_sentence_transformers.json") or {}
    prompts = st_cfg.get("prompts") or {}
    found["prompts"] = {str(k): str(v) for k, v in prompts.items()}
    found["default_task"] = st_cfg.get("default_prompt_name")
    bert_cfg = read_json(folder / "sentence_bert_config.json") or {}
    found["max_tokens"] = bert_cfg.get("max_seq_length")
    return found


def read_json(path: Path) -> dict | list | None:
    """A model folder's JSON file; None when absent, a ValueError naming it when malformed."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def export_sentence_transformers(
    out_dir: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    pooling: str,
    dim: int,
    max_tokens: int,
    prompts: dict[str, str],
    extra: dict[str, Any],
    default_prompt: str | None = None,
) -> Path:
    """Save a model folder that both ``SentenceTransformer(path)`` and our registry open.

    Written to a temporary sibling and renamed into place, so a reader never sees half a model.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "1_Pooling").mkdir()
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps(config_for(pooling, dim), indent=2))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
    (tmp / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_tokens, "do_lower_case": False})
    )
    (tmp / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": prompts,
                # The task used when a caller names none: a model served without it would
                # embed without the prompt its base (and its training) put in front.
                "default_prompt_name": default_prompt if default_prompt in prompts else None,
                "similarity_fn_name": "cosine",
            },
            indent=2,
        )
    )
    (tmp / "embedding_spec.json").write_text(json.dumps(extra, indent=2))
    apply_umask(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
