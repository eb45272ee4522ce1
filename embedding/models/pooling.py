"""Pooling: token states to one vector per text, and how a sentence-transformers folder says which.

In the spirit of sentence-transformers' ``models/Pooling.py``: the pooling function and its
``1_Pooling/config.json`` form (``pooling_mode_*`` flags), read and written here so that the
folder reader (:mod:`embedding.models.st_layout`) and the exporter agree on one mapping.

Pooling works on the attention mask, never on positions, so last-token pooling is right for
left *and* right padding (Qwen2 tokenizers pad on the left). torch is imported inside
:func:`pool` only: specs import this module for :data:`PoolingMode`, and ``import embedding``
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    import torch

PoolingMode = Literal["mean", "cls", "last_token"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states ``[B, T, H]`` to ``[B, H]`` using the attention mask ``[B, T]``."""
    import torch

    if mode == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last_token":
        # Index of the last attended position per row; correct for left and right padding.
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = (positions * mask.long()).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {mode!r}")


# sentence-transformers' mode names -> ours (the modes we pool; max, weightedmean, ... are not).
_ST_MODES: dict[str, PoolingMode] = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}


def mode_from_config(config: dict[str, Any]) -> PoolingMode | None:
    """The mode a sentence-transformers pooling config selects; None when it selects none of ours.

    Both forms: sentence-transformers >= 6 writes ``"pooling_mode": "cls"`` (a list when it
    concatenates modes, which we do not), earlier versions one ``pooling_mode_*`` flag per
    mode. Of several flags, CLS wins over last-token over mean.
    """
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return _ST_MODES.get(mode) if isinstance(mode, str) else None
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "last_token"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    return None


def dimension_from_config(config: dict[str, Any]) -> int | None:
    """The token embedding width a sentence-transformers pooling config names (either form)."""
    return config.get("embedding_dimension") or config.get("word_embedding_dimension")


def config_for(mode: str, dim: int) -> dict[str, Any]:
    """The ``1_Pooling/config.json`` that makes sentence-transformers pool as ``mode`` does.

    The flag form, which every sentence-transformers version reads (>= 6 converts it).
    """
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": mode == "last_token",
    }
