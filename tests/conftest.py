"""Shared fixtures. Every test runs offline: no hub is reachable from here, by design."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_jina_v3, build_tiny_qwen2


@pytest.fixture(scope="session")
def minilm_fp32():
    """The real embedded default model, in fp32 (for parity checks against the peer)."""
    from embedding.inference.encoder import Encoder

    return Encoder.load("minilm", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def minilm():
    """The real embedded default model at its default precision."""
    from embedding.inference.encoder import Encoder

    return Encoder.load("minilm", device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), sharded=True)


@pytest.fixture(scope="session")
def tiny_jina_dir(tmp_path_factory) -> Path:
    return build_tiny_jina_v3(tmp_path_factory.mktemp("tiny-jina"), sharded=False)
