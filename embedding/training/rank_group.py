"""One process's place in a data-parallel training group, and the collectives the loop needs.

The loop (:func:`embedding.training.loop.finetune`) runs unchanged in every rank of a
group started by :mod:`embedding.training.distributed`; given a :class:`RankGroup` it:

- embeds only its **shard** of each global batch: contiguous rows, no two ranks the same
  (:meth:`RankGroup.shard`), every rank reading the same seeded batches;
- **gathers** every rank's embeddings *with their gradients*
  (:meth:`RankGroup.gather_columns`: ``torch.distributed.nn.functional.all_gather``, as
  sentence-transformers' ``gather_across_devices`` does), so the loss (MNRL's in-batch
  negatives above all) is the loss of the global batch, the same value on every rank;
- **averages** the gradients before each optimizer step (:meth:`RankGroup.average_gradients`,
  one all-reduce of one flat buffer). The gather's backward sums every rank's gradient of
  its rows (``world`` equal losses), the average divides by ``world``: each parameter gets
  exactly the single-process gradient of the global batch, so the weights stay identical on
  every rank and equal (to float rounding) to one process training the same global batch.
  GradCache (cached MNRL) gathers its cached embeddings the same way;
- agrees on stopping (:meth:`RankGroup.any`) and takes the writer's evaluation
  (:meth:`RankGroup.from_writer`), so every rank leaves the same epoch.

Rank 0 is the **writer**: only it writes checkpoints, ``run.json`` and the export and
reports epochs; every rank reads a checkpoint to resume.

Not DDP: GradCache embeds each mini-batch twice and backwards once per chunk, and LoRA
trains a few tensors; one all-reduce of the trainable gradients at the optimizer step
serves plain, cached, accumulated and LoRA steps alike.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class RankGroup:
    rank: int
    world_size: int
    device: str  # this rank's torch device: "cpu" or "cuda:<r>"

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def sizes(self, n: int) -> list[int]:
        """Rows of a global batch of ``n`` on each rank: contiguous, the first ``n % world``
        ranks one more."""
        base, extra = divmod(n, self.world_size)
        return [base + (1 if r < extra else 0) for r in range(self.world_size)]

    def shard(self, n: int) -> range:
        """This rank's rows of a global batch of ``n`` (possibly none)."""
        sizes = self.sizes(n)
        start = sum(sizes[: self.rank])
        return range(start, start + sizes[self.rank])

    def gather_columns(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's ``(columns, rows_r, dim)`` embeddings as the global batch's
        ``(columns, n, dim)``, in row order, with autograd back to this rank's rows.

        Shards differ by a row at most; each is padded to the largest for the collective and
        cut back after. A rank with no rows still takes part (with a zero-row leaf that
        requires grad, so its backward joins the collective too).
        """
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_gather

        sizes = self.sizes(n)
        width, mine, dim = local.shape
        if mine != sizes[self.rank]:
            raise ValueError(f"rank {self.rank} has {mine} rows, its shard is {sizes[self.rank]}")
        local = local.float()
        if not local.requires_grad:
            local = local.detach().requires_grad_()
        most = max(sizes)
        if mine < most:
            pad = torch.zeros(width, most - mine, dim, device=local.device)
            local = torch.cat([local, pad], dim=1)
        if dist.get_world_size() != self.world_size:
            raise RuntimeError("the process group is not this rank group")
        with warnings.catch_warnings():  # deprecated for a functional collective that has
            warnings.simplefilter("ignore", FutureWarning)  # no autograd on gloo yet
            parts = all_gather(local)
        return torch.cat([part[:, :size] for part, size in zip(parts, sizes, strict=True)], dim=1)

    def average_gradients(self, model: torch.nn.Module) -> None:
        """The mean of every rank's gradients, in one all-reduce (a missing grad counts as 0)."""
        import torch.distributed as dist

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                for p in params
            ]
        )
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            part = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if p.grad is None:
                p.grad = part.clone()
            else:
                p.grad.copy_(part)

    def broadcast_parameters(self, model: torch.nn.Module) -> None:
        """Rank 0's trainable weights everywhere (they load alike; this makes it certain)."""
        import torch.distributed as dist

        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    dist.broadcast(p.data, src=0)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop asked in one rank stops all)."""
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def from_writer(self, value: Any) -> Any:
        """The writer's ``value`` on every rank (JSON-like objects)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.startswith("cuda"):
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device(self.device)
