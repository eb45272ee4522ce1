"""Training checkpoints, never pickled and always written atomically.

A checkpoint is a folder ``epoch-0003/`` (after epoch 3) or ``epoch-0003-step-000040/``
(inside epoch 4, after its 40th batch: a long epoch is never lost whole) with:

* ``model.safetensors``: the trainable parameters (all of them, or only LoRA adapters);
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors and the rest of
  its state (param groups, scalars), split so that nothing needs pickle;
* ``rng.safetensors``: torch's RNG state (dropout), so a resumed run draws what an
  uninterrupted run would have;
* ``trainer.json``: finished epochs, scheduler state, every finished epoch's figures and,
  inside an epoch, ``partial``: the batches done and their losses, so a resume continues
  at the exact next batch.

Beside the epoch folders, ``run.json`` says which run they belong to (the trainer's
fingerprint of model, settings and data, and the eval before training).

Each folder is written under a temporary name and renamed into place; ``LATEST`` is
replaced the same way. A crash mid-write leaves the previous checkpoint intact. The names
sort in training order, so pruning keeps the newest, and spares one more when asked: the
best epoch's folder (``keep``), whose weights the trainer exports at the end, also after a
resume. Once it is no longer among the newest it loses its optimizer state (only its
weights are ever read again).

When a job ends, :func:`prune_after_job` removes every checkpoint but the last
``keep`` ones, and the optimizer state (twice the weights' size) of those it keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embedding.data.examples import Example
from embedding.inference.encoder import Encoder
from embedding.models.file_modes import apply_umask
from embedding.models.specs import ModelSpec
from embedding.training.config import CheckpointMismatch, TrainConfig

LATEST = "LATEST"
RUN_FILE = "run.json"
KEEP = 2


def _tensors_of(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad
    }


def save_checkpoint(
    directory: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    history: list[dict[str, Any]],
    partial: dict[str, Any] | None = None,
    keep: str | None = None,
) -> Path:
    """Write a checkpoint after ``epoch`` finished epochs (and ``partial["step"]`` batches
    of the next one, when given). Pruning spares the folder named ``keep`` (the best epoch)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}" + (f"-step-{partial['step']:06d}" if partial else "")
    final = directory / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    tensors, meta = _tensors_of(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    trainer = {"epoch": epoch, "scheduler": scheduler.state_dict(), "history": history}
    if partial:
        trainer["partial"] = partial
    (tmp / "trainer.json").write_text(json.dumps(trainer))
    apply_umask(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(directory / LATEST, final.name)
    for old in sorted(directory.glob("epoch-*"))[:-KEEP]:
        if old.name == keep:
            _drop_optimizer(old)
        else:
            shutil.rmtree(old, ignore_errors=True)
    return final


def epoch_folder(directory: Path, epoch: int) -> Path:
    """The checkpoint folder written at the end of ``epoch``."""
    return directory / f"epoch-{epoch:04d}"


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Put a checkpoint's trainable weights back into ``model`` (nothing else changes)."""
    weights = load_file(str(path / "model.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise ValueError(
            f"checkpoint {path} lacks parameters {missing[:3]}: it is from another model"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


def _drop_optimizer(folder: Path) -> None:
    for name in ("optimizer.safetensors", "optimizer.json"):
        (folder / name).unlink(missing_ok=True)


def latest_checkpoint(directory: Path | None) -> Path | None:
    if directory is None or not (directory / LATEST).is_file():
        return None
    path = directory / (directory / LATEST).read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore everything; returns ``trainer.json`` (epoch and history)."""
    load_weights(path, model)
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(
        _optimizer_state(load_file(str(path / "optimizer.safetensors")), meta)
    )
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["cpu"])
    trainer = json.loads((path / "trainer.json").read_text())
    scheduler.load_state_dict(trainer["scheduler"])
    return trainer


def read_run(directory: Path) -> dict[str, Any] | None:
    """``run.json`` of a checkpoint directory, or None when there is none."""
    path = directory / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_run(directory: Path, run: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / RUN_FILE, json.dumps(run, indent=2))


def clear_checkpoints(directory: Path) -> None:
    """Remove every epoch (finished or half-written), ``LATEST`` and ``run.json``.

    A fresh run starts clean: old epochs would otherwise outrank and prune the new ones.
    """
    if not directory.is_dir():
        return
    for path in [*directory.glob("epoch-*"), *directory.glob(".epoch-*")]:
        shutil.rmtree(path, ignore_errors=True)
    for name in (LATEST, RUN_FILE):
        (directory / name).unlink(missing_ok=True)


def prune_after_job(directory: Path, keep: int = 0) -> None:
    """A job has ended: keep the newest ``keep`` checkpoints without their optimizer state,
    remove everything else (half-written folders too). ``keep=0`` removes the folder."""
    if not directory.is_dir():
        return
    if keep <= 0:
        shutil.rmtree(directory, ignore_errors=True)
        return
    folders = sorted(directory.glob("epoch-*"))
    for old in [*folders[:-keep], *directory.glob(".epoch-*")]:
        shutil.rmtree(old, ignore_errors=True)
    for kept in folders[-keep:]:
        _drop_optimizer(kept)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# The run's identity: a resume must be the same run (settings, model, data).
def model_name(model: str | Path | ModelSpec | Encoder) -> str:
    if isinstance(model, Encoder):
        return model.spec.name
    return model.name if isinstance(model, ModelSpec) else str(model)


def rows_sha256(rows: Sequence[Example] | None) -> str | None:
    if rows is None:
        return None
    return hashlib.sha256(json.dumps(list(rows), ensure_ascii=False).encode()).hexdigest()


def run_fingerprint(
    model_name: str,
    config: TrainConfig,
    rows: Sequence[Example],
    validation: Sequence[Example] | None,
) -> dict[str, Any]:
    return {
        "model": model_name,
        "config": asdict(config),
        "rows": len(rows),
        "data_sha256": rows_sha256(rows),
        # The best epoch so far was chosen on these rows: another set would mix two scales.
        "eval_sha256": rows_sha256(validation),
    }


def check_same_run(checkpoint_dir: Path, fingerprint: dict[str, Any]) -> None:
    saved = (read_run(checkpoint_dir) or {}).get("fingerprint")
    if saved is None:  # checkpoints written before fingerprints existed
        return
    differ = [k for k in ("model", "rows", "data_sha256") if saved.get(k) != fingerprint[k]]
    if "eval_sha256" in saved and saved["eval_sha256"] != fingerprint["eval_sha256"]:
        differ.append("eval_sha256")  # (absent: written before the validation set counted)
    # A setting added since the checkpoint was written counts as its default there.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    saved_config = saved.get("config", {})
    differ += [
        f"config.{k}"
        for k, v in fingerprint["config"].items()
        if saved_config.get(k, defaults.get(k)) != v
    ]
    if differ:
        raise CheckpointMismatch(
            f"{checkpoint_dir} holds checkpoints of another run (differs in {', '.join(differ)}); "
            "resume with the same model, data and settings, or start fresh without resume"
        )
