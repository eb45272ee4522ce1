"""Pay a worker's first-use costs while it starts, not inside the first request.

On an H200 the validation suite spent about 8.5 s of its loading check in first imports:
transformers' model modules (imported lazily, on the first ``AutoModel``), peft, and the
CUDA libraries torch loads on the first kernel (cuBLAS, cuDNN). Each is paid once per
process, by whichever request comes first: a CI run of ``embedctl validate`` right after
the worker starts, or the first embedding a service asks for. :func:`warm_up` pays them as
the pool starts instead (``embedctl worker`` runs it in a thread beside Celery's start-up),
and says what each step cost, so the log shows where a slow start went.

Only imports and a tiny product on the device: no model is loaded, nothing is held.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time

log = logging.getLogger(__name__)

# The architectures of the registered specs: minilm (BERT), Qodo-Embed-1 (Qwen2) and
# jina v3 (XLM-RoBERTa). A folder of another architecture still imports its own on load.
MODEL_MODULES = (
    "transformers.models.bert.modeling_bert",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.models.xlm_roberta.modeling_xlm_roberta",
)


def warm_up(device: str | None = None) -> dict[str, float]:
    """Import what a first model load imports and touch the device once; returns the
    seconds each step took (``imports``, ``peft``, ``device``). Never raises: a warm-up
    that fails leaves the cost where it was, in the first request, and logs why."""
    spent: dict[str, float] = {}
    try:
        start = time.perf_counter()
        import torch  # noqa: F401
        import transformers  # noqa: F401

        for name in MODEL_MODULES:
            importlib.import_module(name)
        from transformers import AutoModel, AutoTokenizer  # noqa: F401

        spent["imports"] = time.perf_counter() - start
        if importlib.util.find_spec("peft") is not None:  # LoRA: large specs, adapters
            start = time.perf_counter()
            import peft  # noqa: F401

            spent["peft"] = time.perf_counter() - start
        spent["device"] = _touch(device)
    except Exception as exc:  # the first request pays instead; say why
        log.warning("warm-up stopped early (%s: %s)", type(exc).__name__, exc)
    return spent


def _touch(device: str | None) -> float:
    """One small bf16 product on a CUDA device: its context, cuBLAS and the kernels' first
    load. On a CPU there is nothing to load, so nothing is done."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda"):
        return 0.0
    start = time.perf_counter()
    a = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
    (a @ a).sum().item()
    torch.cuda.synchronize(device)
    return time.perf_counter() - start
