"""Text -> vector: tokenize, forward, pool, normalize.

Design choices, each measured (benchmarks/encode.py, benchmarks/RESULTS.md):

* We tokenize each text once, without truncation, and truncate ourselves. That gives a
  per-item truncation report for free (silent truncation is the most common complaint
  about sentence-transformers) and lets us build batches under a *token budget*.
* Batches are length-sorted and sized by tokens, not by count, so short texts run in big
  batches and long ones in small batches, with little padding.
* bf16 autocast where the hardware has it and the spec allows; the encoder's default
  precision is the spec's, which we only set to bf16 after measuring cosine >= 0.9999
  against fp32 on the benchmark corpus.
* Pooling (:mod:`embedding.models.pooling`) works on the attention mask, so last-token pooling is
  right for left *and* right padding.

Empty strings are encoded as the model's special tokens alone (for BERT-like models
``[CLS] [SEP]``, for Qwen2 its end-of-text token): every empty input maps to the same
fixed unit vector, so callers never get an exception or a zero vector for ``""``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding.inference.attention_kernels import configure_attention
from embedding.inference.compiled_blocks import compile_blocks
from embedding.inference.device_profile import PassProfile, pass_profile
from embedding.inference.length_batching import length_batches, spread_passes
from embedding.inference.pass_pool import PassPool
from embedding.inference.precision import resolve_precision
from embedding.models.adapters import adapter_for_task, attach_task_adapters, find_task_adapters
from embedding.models.hub import ResolvedModel, resolve
from embedding.models.pooling import pool
from embedding.models.specs import ModelSpec, get_spec
from embedding.models.st_layout import read_sentence_transformers_files
from embedding.models.weights import LoadReport, inventory

if TYPE_CHECKING:
    import torch

# A cap on characters before tokenizing: no text needs more than this many characters per
# token it may keep, and it bounds tokenizer time on huge inputs. If the cap cut a text that
# then fits, we tokenize the whole text again, so the cap never loses a token that fits.
CHARS_PER_TOKEN_CAP = 32


@dataclass(frozen=True)
class Truncation:
    """What happened to one input on its way into the model."""

    index: int
    chars: int
    chars_capped: bool
    tokens: int  # tokens of the text with prompt and specials (of the capped text if capped)
    tokens_used: int
    truncated: bool


def pick_device(preference: str = "auto") -> str:
    """``auto`` means CUDA when present, else CPU. CUDA is only queried here, lazily."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


class Encoder:
    """One loaded transformer with its tokenizer, pooling and precision.

    Build it with :meth:`Encoder.load`. The model is usable for inference (:meth:`encode`)
    and, through :meth:`tokenize` + :meth:`embed`, for training with gradients.
    ``load_reports`` holds its one :class:`LoadReport`, a list as on :class:`CombinedEncoder`,
    so callers treat every loaded model alike.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        tokenizer: Any,
        device: str,
        precision: str,
        load_report: LoadReport,
    ):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        config = getattr(model, "config", None)
        self.profile: PassProfile = pass_profile(  # budgets and pass shapes on this device
            device,
            int(getattr(config, "hidden_size", 0) or 0),
            int(getattr(config, "num_hidden_layers", 0) or 0),
        )
        # A causal model (Qwen2) needs no padding mask: padding sits after every real token
        # (collate pads right), and no real token attends forward (see embed).
        self.causal = any(getattr(m, "is_causal", False) is True for m in model.modules())
        self.load_reports: list[LoadReport] = [load_report]
        self._head, self._tail = _special_token_frame(tokenizer)
        self.dim = spec.dim or int(model.config.hidden_size)
        self.adapters: tuple[str, ...] = tuple(
            load_report.adapters
        )  # see embedding/models/adapters.py
        # Whether inference may build the low-precision twin (see _inference_model). The
        # trainer turns it off on its copy: a second copy of the linear weights is dead
        # weight while training changes them every step (3 GB on a 1.5 B model).
        self.inference_twin = True
        # Whether inference runs compiled blocks: the twin's, or in fp32 the model's own
        # (embedding/inference/compiled_blocks.py; an encoder that trains never compiles).
        self.compile_inference = False
        self._model_compiled = False  # fp32 has no twin: its inference model is compiled
        self._twin: Any = None
        self._twin_versions: tuple = ()
        # ``encode`` may run in several threads at once (the embed worker's runners): the
        # tokenizer's Rust object refuses a second borrower while its settings change, the
        # twin must be built once, and an adapter switch must not land in another call's
        # forward passes (so a model with adapters encodes one call at a time).
        self._tokenizer_lock = threading.Lock()
        self._twin_lock = threading.Lock()
        self._adapter_lock = threading.Lock()

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name_or_spec: str | Path | ModelSpec,
        device: str = "auto",
        precision: str | None = None,
        task_adapters: bool = True,
        compile_inference: bool | None = None,
    ) -> Encoder:
        """Resolve, validate every safetensors header, then load config, tokenizer and weights.

        A spec with per-task adapters gets all of them attached (``task_adapters=False``
        loads the bare base, which is what fine-tuning trains new adapters on).
        ``compile_inference`` (default: ``EMBEDDING_COMPILE_BLOCKS``) compiles the blocks
        inference runs (:mod:`embedding.inference.compiled_blocks`).
        """
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our callers show their own progress
        spec = name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)
        if spec.source == "combined":
            raise ValueError(f"{spec.name!r} is combined: use load_encoder() for it")
        started = time.perf_counter()
        resolved: ResolvedModel = resolve(spec)
        spec = with_folder_prompts(spec, resolved.folder)
        inv = inventory(resolved.folder)  # refuses pickles, corrupt headers, missing shards
        adapters = find_task_adapters(resolved.folder) if spec.task_adapters else {}
        if spec.task_adapters and not adapters:
            raise ValueError(
                f"model {spec.name!r} declares per-task adapters, but {resolved.folder} has "
                "none: without them it is not the published model"
            )
        if spec.shards is not None and spec.revision_verified and len(inv.shards) != spec.shards:
            raise ValueError(
                f"model {spec.name!r}: expected {spec.shards} shards, found {len(inv.shards)}"
            )
        device = pick_device(device)
        configure_attention(
            device
        )  # no cuDNN attention on CUDA: embedding/inference/attention_kernels.py
        precision = resolve_precision(precision, spec.default_precision, spec.bf16_allowed, device)
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.folder, trust_remote_code=spec.trust_remote_code
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        # We tokenize without truncation on purpose (to report it) and truncate ourselves:
        # mark transformers' "sequence longer than the maximum" warning as already given.
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True
        model = AutoModel.from_pretrained(
            resolved.folder,
            use_safetensors=True,
            trust_remote_code=spec.trust_remote_code,
            dtype=torch.float32,
        )
        # An encoder never generates: no KV cache. Qwen2's config asks for one, so each pass
        # built a DynamicCache holding every layer's keys and values until its end, and a
        # compiled block recompiled on the cache's state and its layer index.
        if getattr(model.config, "use_cache", False):
            model.config.use_cache = False
        if adapters and task_adapters:
            model = attach_task_adapters(model, adapters)
        model.to(device).eval()
        report = LoadReport(
            model=spec.name,
            source=resolved.source,
            path=str(resolved.folder),
            load_time_ms=(time.perf_counter() - started) * 1000.0,
            size_mb=inv.size_bytes / 1e6,
            tensor_count=inv.tensor_count,
            parameter_count=inv.parameter_count,
            dtypes=inv.dtypes,
            shards=len(inv.shards),
            weights_present=inv.tensor_count > 0,
            device=device,
            precision=precision,
            tried=resolved.tried,
            adapters=sorted(adapters) if task_adapters else [],
        )
        encoder = cls(spec, model, tokenizer, device, precision, report)
        if compile_inference is None:
            from core.config import get_settings

            compile_inference = get_settings().compile_blocks
        encoder.compile_inference = compile_inference
        if compile_inference:
            encoder._compile_now()
        return encoder

    def _compile_now(self) -> None:
        """Compile the blocks inference runs at load, with a pass of several texts and one
        of a single text (the graphs requests use), so a machine where compiling fails refuses
        the model at load with the reason, and no request pays the compile."""
        try:
            self.encode(["def probe(x):\n    return x", "probe"])
            self.encode("probe")
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RuntimeError(
                f"EMBEDDING_COMPILE_BLOCKS: compiling {self.spec.name!r}'s blocks failed on "
                f"{self.device} ({type(exc).__name__}: {first}); unset it to run eager"
            ) from exc

    # ------------------------------------------------------------ tokenization
    def _content_ids(
        self, texts: Sequence[str], max_tokens: int
    ) -> tuple[list[list[int]], list[bool]]:
        """Token ids without special tokens, after the character cap; and whether it cut."""
        cap = max_tokens * CHARS_PER_TOKEN_CAP
        capped = [len(t) > cap for t in texts]
        clipped = [t[:cap] if c else t for t, c in zip(texts, capped, strict=True)]
        ids = self.tokenizer(clipped, add_special_tokens=False)["input_ids"]
        room = max_tokens - len(self._head) - len(self._tail)
        for i, was_capped in enumerate(capped):
            if was_capped and len(ids[i]) < room:  # the cap cut tokens that would fit
                ids[i] = self.tokenizer(texts[i], add_special_tokens=False)["input_ids"]
                capped[i] = False
        return ids, capped

    def prepare(
        self, texts: Sequence[str], task: str | None = None, prompt: str | None = None
    ) -> tuple[list[list[int]], list[Truncation]]:
        """Check inputs, add the prompt, tokenize once, truncate, and report per item."""
        _check_texts(texts)
        prefix = prompt if prompt is not None else self.spec.prompt_for(task)
        full = [prefix + t for t in texts] if prefix else list(texts)
        max_tokens = self.spec.max_tokens or int(self.tokenizer.model_max_length)
        content, capped = self._content_ids(full, max_tokens)
        room = max_tokens - len(self._head) - len(self._tail)
        sequences, report = [], []
        for i, ids in enumerate(content):
            kept = ids[:room]
            seq = self._head + kept + self._tail
            if not seq:  # a tokenizer that adds no special tokens, on an empty string
                seq = [self._fallback_token()]
            sequences.append(seq)
            total = len(ids) + len(self._head) + len(self._tail)
            report.append(
                Truncation(
                    index=i,
                    chars=len(texts[i]),
                    chars_capped=capped[i],
                    tokens=total,
                    tokens_used=len(seq),
                    truncated=capped[i] or len(ids) > room,
                )
            )
        return sequences, report

    def _fallback_token(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def collate(self, sequences: Sequence[list[int]]) -> dict[str, Any]:
        """Pad token id lists into tensors on the encoder's device.

        Always on the right, whatever the tokenizer's side: pooling reads the mask, so both
        are right for every model, but under a causal mask a left-padded row's padding
        queries see no key at all, the fully masked rows that attention kernels turn into
        NaN (embedding/inference/attention_kernels.py), and models with absolute positions (BERT)
        would see shifted positions. The width is rounded up to the device profile's
        multiple. On CUDA the tensors are built in pinned memory and copied without
        waiting, so the CPU collates the next pass while the GPU runs this one.
        ``padded`` says whether any row is padded: a pass without padding runs without a
        mask (flash attention, no mask to build).
        """
        import torch

        longest = max(len(s) for s in sequences)
        width = self.profile.padded_width(longest)
        pad_id = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        padded = width != longest or any(len(s) != longest for s in sequences)
        if self.device.startswith("cuda"):
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return {
            "input_ids": ids.to(self.device, non_blocking=True),
            "attention_mask": mask.to(self.device, non_blocking=True),
            "padded": padded,
        }

    def tokenize(self, texts: Sequence[str], task: str | None = None) -> dict[str, torch.Tensor]:
        """Texts -> padded tensors, for training (see :meth:`embed`)."""
        sequences, _ = self.prepare(texts, task=task)
        return self.collate(sequences)

    # ------------------------------------------------------------------ forward
    def autocast(self):
        """The precision context for forward passes (a no-op in fp32)."""
        import contextlib

        import torch

        if self.precision == "bf16":
            return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)
        if self.precision == "fp16":
            return torch.autocast(self.device.split(":")[0], dtype=torch.float16)
        return contextlib.nullcontext()

    def embed(
        self,
        features: dict[str, torch.Tensor],
        normalize: bool = True,
        truncate_dim: int | None = None,
    ) -> torch.Tensor:
        """Forward + pool (+ Matryoshka truncation + L2) with autograd as the caller set it."""
        import torch
        import torch.nn.functional as F

        # A model in training mode runs itself, also without autograd: the twin is in eval
        # mode (no dropout), and GradCache's first pass (losses/cached_mnrl.py) must draw the
        # dropout masks its second pass replays.
        training = torch.is_grad_enabled() or self.model.training
        model = self.model if training else self._inference_model()
        # The twin is low precision through and through: autocast would only add casts.
        mask = features["attention_mask"]
        # Without a mask, attention runs the flash kernel and no mask is built. That is
        # exact when no row is padded, and for a causal model padded on the right: a real
        # token attends only to the tokens before it, all real; the padding's own states
        # are never pooled (pooling reads the mask).
        needs_mask = features.get("padded", True) and not self.causal
        with self.autocast() if model is self.model else contextlib.nullcontext():
            hidden = model(
                input_ids=features["input_ids"], attention_mask=mask if needs_mask else None
            ).last_hidden_state
        pooled = pool(hidden.float(), mask, self.spec.pooling)
        if truncate_dim:
            pooled = pooled[:, :truncate_dim]
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled

    def _inference_model(self) -> Any:
        """The model to run under ``inference_mode``.

        In bf16/fp16, a twin of the model cast whole to that precision and run without
        autocast. Autocast over fp32 weights re-casts every weight on every call; a twin with
        only its linear layers pre-cast (the previous design) still cast activations in and
        out of every layer norm, softmax and GELU that autocast keeps in fp32 (10 % of the
        time in `aten::copy_`). Cast whole: 159 against 135 texts/s on minilm (Xeon with
        AMX, batches of 16 code snippets), min cosine to fp32 0.99993 against 0.99998.
        It costs one low-precision copy of the weights. The model itself keeps fp32
        weights: training and copies are unaffected, and the twin is rebuilt when training
        has changed the weights.
        """
        import copy

        import torch

        if self.precision not in ("bf16", "fp16") or not self.inference_twin:
            self._twin, self._twin_versions = None, ()
            if self.compile_inference and not self._model_compiled:
                with self._twin_lock:  # fp32: the model itself is what inference runs
                    if not self._model_compiled:
                        compile_blocks(self.model)
                        self._model_compiled = True
            return self.model
        with self._twin_lock:
            versions = tuple((p.data_ptr(), p._version) for p in self.model.parameters())
            if versions != self._twin_versions:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
                self._twin = None  # the old twin's memory goes before the new one is made
                twin = copy.deepcopy(self.model).to(dtype).eval()
                if self.compile_inference:
                    compile_blocks(twin)
                self._twin, self._twin_versions = twin, versions
            return self._twin

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 256,
        normalize: bool = True,
        task: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        token_budget: int | None = None,
        return_report: bool = False,
        progress: Any = None,
        pool: PassPool | None = None,
    ) -> np.ndarray | tuple[np.ndarray, list[Truncation]]:
        """Embed texts; float32 rows in input order. ``progress`` gets ``update(n)`` calls.

        With a ``pool``, the forward passes run side by side on its single-threaded workers
        (:mod:`embedding.inference.pass_pool`); without, one after another on every core.
        ``token_budget`` (padded tokens per pass) defaults to the device profile's.
        On CUDA, the vectors stay on the GPU until the last pass is queued and come back
        in one copy: nothing waits for the GPU between passes.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        self._check_truncate_dim(truncate_dim)
        out_dim = truncate_dim or self.dim
        if not items:
            empty = np.zeros((0, out_dim), dtype=np.float32)
            return (empty, []) if return_report else empty
        with self._tokenizer_lock:
            sequences, report = self.prepare(items, task=task, prompt=prompt)
        lengths = [len(s) for s in sequences]
        plan = self.plan_passes(lengths, batch_size, token_budget)
        if pool is not None:
            plan = spread_passes(plan, lengths, pool.workers)
        out = np.empty((len(items), out_dim), dtype=np.float32)
        on_gpu = self.device.startswith("cuda")
        queued: list[tuple[list[int], Any]] = []  # CUDA: (rows, vectors still on the GPU)

        def run(batch: list[int]) -> None:
            import torch

            with torch.inference_mode():  # per thread: a pool worker enters it itself
                vectors = self.embed(
                    self.collate([sequences[i] for i in batch]),
                    normalize=normalize,
                    truncate_dim=truncate_dim,
                )
            if on_gpu:
                queued.append((batch, vectors))
            else:
                out[batch] = vectors.float().cpu().numpy()

        with self._adapter_lock if self.adapters else contextlib.nullcontext():
            if self.adapters:
                chosen = task or self.spec.default_task
                self._use_adapter(adapter_for_task(self.spec.name, self.adapters, chosen))
            if pool is None or len(plan) == 1:
                for batch in plan:
                    run(batch)
                    if progress is not None:
                        progress.update(len(batch))
            else:
                _run_on_pool(pool, run, plan, progress)  # the twin lock builds the twin once
        if queued:
            _gather(out, queued)
        result = out[0:1] if single else out
        return (result, report) if return_report else result

    def plan_passes(
        self, lengths: Sequence[int], batch_size: int = 256, token_budget: int | None = None
    ) -> list[list[int]]:
        """How :meth:`encode` groups texts of these token lengths into forward passes: the
        device profile's cost model, under ``token_budget`` (default: the profile's)."""
        profile = self.profile
        budget = token_budget or profile.encode_token_budget
        return list(
            length_batches(
                lengths, batch_size, budget, profile.overhead_tokens, profile.attention_width
            )
        )

    def _use_adapter(self, name: str) -> None:
        """Make ``name`` the active task adapter of the model and of its low-precision twin."""
        for model in (self.model, self._twin):
            if model is not None and model.active_adapter != name:
                model.set_adapter(name, inference_mode=True)  # frozen: never made trainable

    def _check_truncate_dim(self, truncate_dim: int | None) -> None:
        if truncate_dim is None:
            return
        dims = self.spec.matryoshka_dims
        if truncate_dim <= 0 or truncate_dim > self.dim or (dims and truncate_dim not in dims):
            allowed = list(dims) if dims else f"1..{self.dim}"
            raise ValueError(
                f"truncate_dim={truncate_dim} is not allowed for {self.spec.name!r}: {allowed}"
            )


class CombinedEncoder:
    """Members' unit vectors concatenated and L2-normalized again (equal weight per member).

    ``load_reports`` holds one :class:`LoadReport` per member, in member order.
    """

    def __init__(self, spec: ModelSpec, members: list[Encoder]):
        self.spec = spec
        self.members = members
        self.dim = sum(m.dim for m in members)
        self.load_reports: list[LoadReport] = [r for m in members for r in m.load_reports]

    def encode(self, texts: str | Sequence[str], return_report: bool = False, **kwargs: Any):
        parts, reports = [], []
        for member in self.members:
            vectors, report = member.encode(texts, return_report=True, **kwargs)
            parts.append(vectors)
            reports.append(report)
        joined = np.concatenate(parts, axis=1)
        norms = np.linalg.norm(joined, axis=1, keepdims=True)
        joined = joined / np.maximum(norms, 1e-12)
        return (joined, reports) if return_report else joined


def with_folder_prompts(spec: ModelSpec, folder: Path) -> ModelSpec:
    """The spec, with prompts from the folder's sentence-transformers config filling its gaps.

    A hub model's own ``config_sentence_transformers.json`` (Qodo's query instruction, say)
    is the publisher's word on its prompts; the spec's prompts, when it names them, win.
    """
    found = read_sentence_transformers_files(Path(folder)).get("prompts") or {}
    missing = {task: text for task, text in found.items() if task not in spec.prompts}
    if not missing:
        return spec
    return replace(spec, prompts={**spec.prompts, **missing})


def load_encoder(
    name_or_spec: str | Path | ModelSpec, device: str = "auto", precision: str | None = None
) -> Encoder | CombinedEncoder:
    """Load any spec, including combined ones."""
    spec = name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)
    if spec.source == "combined":
        members = [Encoder.load(m, device=device, precision=precision) for m in spec.members]
        return CombinedEncoder(spec, members)
    return Encoder.load(spec, device=device, precision=precision)


def _gather(out: np.ndarray, queued: list[tuple[list[int], Any]]) -> None:
    """Copy the GPU's vectors into ``out`` with one device-to-host copy (one wait)."""
    import torch

    rows = [i for batch, _ in queued for i in batch]
    vectors = torch.cat([v for _, v in queued]) if len(queued) > 1 else queued[0][1]
    out[rows] = vectors.float().cpu().numpy()


def _run_on_pool(pool: PassPool, run: Any, plan: list[list[int]], progress: Any) -> None:
    """Every pass of ``plan`` on the pool; returns when all have ended, raises the first
    failure (after the others ended: none still writes into the output afterwards)."""
    from concurrent.futures import as_completed

    futures = {pool.submit(run, batch): len(batch) for batch in plan}
    failure: BaseException | None = None
    for done in as_completed(futures):
        if done.exception() is not None:
            failure = failure or done.exception()
        elif progress is not None:
            progress.update(futures[done])
    if failure is not None:
        raise failure


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def similarity_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``a`` (and ``b``)."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def _check_texts(texts: Sequence[object]) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, not str")


def _special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence.

    Found by tokenizing a probe text with and without special tokens and locating the
    content inside the framed ids (transformers 5 has no public API for this).
    """
    probe = "hello"
    content = tokenizer(probe, add_special_tokens=False)["input_ids"]
    framed = tokenizer(probe)["input_ids"]
    n = len(content)
    for at in range(len(framed) - n + 1):
        if framed[at : at + n] == content:
            return list(framed[:at]), list(framed[at + n :])
    return [], []
