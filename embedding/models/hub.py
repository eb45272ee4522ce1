"""Resolve a spec to a local model folder: bundled package, local path, HF cache, hub download.

The order is fixed and every step taken is recorded, so a model that cannot be had raises
:class:`ModelUnavailable` naming the model and everything that was tried. There is no
fallback to random or mock weights anywhere: a missing model is an error, and a caller that
wants a different model asks for it by name.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from embedding.models.specs import ModelSpec
from embedding.models.weights import CorruptWeights, UnsafeWeightsFormat, safetensors_files

# Only what an encoder needs: configs, tokenizer, safetensors (never .bin / .pt pickles).
# The hub matches with fnmatch, where "*" also crosses "/": "*.json" and "*.safetensors" bring
# the per-task adapter folders too (jina v3: retrieval_query/adapter_model.safetensors, ...).
HUB_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "tokenizer*",
    "1_Pooling/*",
]
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


class ModelUnavailable(RuntimeError):
    """The model cannot be had here; ``tried`` lists every source attempted and why it failed."""

    def __init__(self, model: str, tried: list[str]):
        self.model = model
        self.tried = tried
        super().__init__(f"model {model!r} is unavailable; tried: " + "; ".join(tried))


class PathNotAllowed(PermissionError):
    """A model path from an untrusted payload lies outside the configured roots."""


@dataclass
class ResolvedModel:
    folder: Path
    source: str  # bundled / local / hf-cache / hub-download
    tried: list[str] = field(default_factory=list)


def resolve(spec: ModelSpec) -> ResolvedModel:
    """Find ``spec``'s files on disk, downloading them at the pinned revision if allowed."""
    if spec.source == "combined":
        raise ValueError(f"{spec.name!r} is a combined spec: resolve its members instead")
    tried: list[str] = []
    if spec.package:
        folder = _bundled_folder(spec.package)
        if folder is not None and _complete(folder, tried, "bundled"):
            return ResolvedModel(folder, "bundled", tried)
        if folder is None:
            tried.append(f"bundled package {spec.package!r}: not installed")
    if spec.path:
        folder = Path(spec.path).expanduser()
        if folder.is_dir() and _complete(folder, tried, "local"):
            return ResolvedModel(folder.resolve(), "local", tried)
        if not folder.is_dir():
            tried.append(f"local path {folder}: not a directory")
    if spec.repo_id:
        return _from_hub(spec, tried)
    raise ModelUnavailable(spec.name, tried or ["the spec names no source"])


def _bundled_folder(package: str) -> Path | None:
    if importlib.util.find_spec(package) is None:
        return None
    root = importlib.resources.files(package)
    folder = Path(str(root)) / "model"
    return folder if folder.is_dir() else Path(str(root))


def _complete(folder: Path, tried: list[str], label: str) -> bool:
    """True when the folder has a config, a tokenizer and safetensors weights.

    A folder holding only pickle weights raises :class:`UnsafeWeightsFormat` (the rule of
    :func:`~embedding.models.weights.safetensors_files`) instead of falling through to the next
    source: a refused format is a decision, not a missing file.
    """
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer")
    if not any(folder.glob("*.safetensors")):
        try:
            safetensors_files(folder)  # the pickle refusal, raised
        except CorruptWeights:  # no weights at all: missing, try the next source
            missing.append("*.safetensors")
    if missing:
        tried.append(f"{label} {folder}: missing {', '.join(missing)}")
        return False
    return True


def _from_hub(spec: ModelSpec, tried: list[str]) -> ResolvedModel:
    # Imported here: huggingface_hub is only needed when a model comes from the hub.
    from huggingface_hub import snapshot_download

    where = f"{spec.repo_id}@{spec.revision}"
    try:
        folder = Path(
            snapshot_download(
                spec.repo_id,
                revision=spec.revision,
                allow_patterns=HUB_ALLOW_PATTERNS,
                local_files_only=True,
            )
        )
        if _complete(folder, tried, f"HF cache ({_hf_home()})"):
            return ResolvedModel(folder, "hf-cache", tried)
    except UnsafeWeightsFormat:
        raise
    except Exception as exc:
        tried.append(f"HF cache ({_hf_home()}) {where}: {_short(exc)}")
    if _offline():
        tried.append(f"hub download {where}: skipped, HF_HUB_OFFLINE=1")
        raise ModelUnavailable(spec.name, tried)
    try:
        folder = Path(
            snapshot_download(
                spec.repo_id, revision=spec.revision, allow_patterns=HUB_ALLOW_PATTERNS
            )
        )
    except Exception as exc:
        tried.append(f"hub download {where}: {_short(exc)}")
        raise ModelUnavailable(spec.name, tried) from exc
    if _complete(folder, tried, f"hub download {where}"):
        return ResolvedModel(folder, "hub-download", tried)
    raise ModelUnavailable(spec.name, tried)


def ensure_under_roots(path: str | Path, roots: list[Path], what: str = "model path") -> Path:
    """Resolve ``path`` (following symlinks) and require it to lie under one of ``roots``.

    For model and dataset paths that arrive in task payloads (``what`` names which, for
    the message): ``../`` tricks and symlinks that lead out of the allowed roots are refused.
    """
    real = Path(path).expanduser().resolve()
    for root in roots:
        real_root = Path(root).expanduser().resolve()
        if real == real_root or real_root in real.parents:
            return real
    raise PathNotAllowed(
        f"{what} {str(path)!r} resolves to {real}, outside the allowed roots "
        f"({', '.join(str(r) for r in roots)})"
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_home() -> str:
    return os.environ.get("HF_HOME", "~/.cache/huggingface")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}"
