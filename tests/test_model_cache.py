"""workers.serving.model_cache: real encoders (two tiny architectures and the embedded MiniLM), no
broker, no database. The least recently used model goes first, by count and by megabytes."""

from __future__ import annotations

import pytest

from workers.serving.model_cache import ModelCache


@pytest.fixture(scope="module")
def sizes(tiny_qwen2_dir, tiny_jina_dir) -> dict[str, float]:
    """Each model's megabytes as the cache counts them (one model alone in a cache)."""
    out = {}
    for name in (str(tiny_qwen2_dir), str(tiny_jina_dir)):
        cache = ModelCache(max_models=1, max_mb=1e9)
        cache.get(name)
        out[name] = cache.total_mb()
    return out


def test_a_cached_model_is_not_loaded_again(tiny_qwen2_dir):
    cache = ModelCache(max_models=2, max_mb=1e9)
    first = cache.get(str(tiny_qwen2_dir))
    assert cache.get(str(tiny_qwen2_dir)) is first
    assert cache.get(str(tiny_qwen2_dir), precision="fp32") is not first  # another precision
    assert cache.names() == [str(tiny_qwen2_dir)] * 2


def test_past_the_count_the_least_recently_used_goes(tiny_qwen2_dir, tiny_jina_dir):
    qwen, jina = str(tiny_qwen2_dir), str(tiny_jina_dir)
    cache = ModelCache(max_models=2, max_mb=1e9)
    kept = cache.get(qwen)
    cache.get(jina)
    assert cache.get(qwen) is kept  # now jina is the least recently used
    cache.get("minilm")
    assert cache.names() == [qwen, "minilm"]
    assert cache.get(qwen) is kept


def test_past_the_megabytes_the_least_recently_used_goes(sizes, tiny_qwen2_dir, tiny_jina_dir):
    qwen, jina = str(tiny_qwen2_dir), str(tiny_jina_dir)
    # Room for jina and one qwen, not for a second qwen (the same folder in fp32 is another entry).
    cache = ModelCache(max_models=10, max_mb=sizes[jina] + 1.5 * sizes[qwen])
    cache.get(qwen)
    cache.get(jina)
    cache.get(qwen)  # jina becomes the least recently used
    cache.get(qwen, precision="fp32")
    assert cache.names() == [qwen, qwen]
    assert cache.total_mb() == pytest.approx(2 * sizes[qwen])
    assert cache.total_mb() <= cache.max_mb


def test_a_model_over_the_whole_budget_still_loads_and_stays_alone(sizes, tiny_qwen2_dir):
    qwen = str(tiny_qwen2_dir)
    cache = ModelCache(max_models=10, max_mb=2 * sizes[qwen])
    cache.get(qwen)
    minilm = cache.get("minilm")
    assert cache.names() == ["minilm"]
    assert cache.total_mb() > cache.max_mb
    assert cache.get("minilm") is minilm
    cache.clear()
    assert cache.names() == [] and cache.total_mb() == 0


def test_at_least_one_model_is_required():
    with pytest.raises(ValueError, match="max_models must be >= 1"):
        ModelCache(max_models=0, max_mb=100)


def test_the_deployment_can_pin_the_precision(monkeypatch, tiny_qwen2_dir):
    """``EMBEDDING_PRECISION`` overrides the measured default; a caller's choice overrides it."""
    from core.config import get_settings
    from embedding.inference.precision import bf16_supported

    monkeypatch.setenv("EMBEDDING_PRECISION", "bf16")
    get_settings.cache_clear()
    try:
        cache = ModelCache(max_models=3, max_mb=1e9)
        pinned = cache.get(str(tiny_qwen2_dir))  # its own default is fp32
        assert pinned.precision == ("bf16" if bf16_supported("cpu") else "fp32")
        assert cache.get(str(tiny_qwen2_dir), precision="fp32").precision == "fp32"
        monkeypatch.setenv("EMBEDDING_PRECISION", "fp32")
        get_settings.cache_clear()
        assert ModelCache(max_models=1, max_mb=1e9).get("minilm").precision == "fp32"
    finally:
        monkeypatch.delenv("EMBEDDING_PRECISION")
        get_settings.cache_clear()
