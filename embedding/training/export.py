"""The trained model written as a sentence-transformers folder that the encoder and
sentence-transformers both load, with everything a served model needs.
"""

from __future__ import annotations

from pathlib import Path

from embedding.inference.encoder import Encoder
from embedding.models.st_layout import export_sentence_transformers


def export_model(encoder: Encoder, out_dir: Path, merged_lora: bool) -> Path:
    """Save in the sentence-transformers layout; LoRA adapters are merged into the base first."""
    model = encoder.model.merge_and_unload() if merged_lora else encoder.model
    spec = encoder.spec
    return export_sentence_transformers(
        out_dir,
        model,
        encoder.tokenizer,
        pooling=spec.pooling,
        dim=encoder.dim,
        max_tokens=spec.max_tokens,
        prompts=dict(spec.prompts),
        default_prompt=spec.default_task,
        # Everything a served model needs beyond the ST files: its precision policy and
        # Matryoshka dims (embedding.models.specs.spec_from_folder reads them back).
        extra={
            "name": out_dir.name,
            "base_model": spec.name,
            # The base's precision policy travels with it (embedding/inference/precision.py).
            "default_precision": spec.default_precision,
            "bf16_allowed": spec.bf16_allowed,
            # A fine-tune keeps the base's Matryoshka dims: truncating to them stays valid
            # (and `matryoshka` training optimized exactly those widths).
            "matryoshka_dims": list(spec.matryoshka_dims),
        },
    )
