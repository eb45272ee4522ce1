"""The encoder against the peer (sentence-transformers) and against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedding.data.corpus import code_corpus
from embedding.inference.encoder import (
    CombinedEncoder,
    Encoder,
    load_encoder,
    similarity,
    similarity_matrix,
)
from embedding.models import specs
from embedding.models.specs import ModelSpec, spec_from_folder
from tests.tiny_models import MINILM_DIR, build_tiny_qwen2, write_st_pooling


def mixed_texts() -> list[str]:
    texts = code_corpus(60, seed=1)
    texts += ["x", "def f(): return 1", "word " * 600, "🙂 emoji", "日本語のテキスト", "a\tb\nc"]
    return texts


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MINILM_DIR), device="cpu")


def test_parity_with_sentence_transformers_fp32(minilm_fp32, st_model):
    texts = mixed_texts()
    ours, report = minilm_fp32.encode(texts, return_report=True)
    theirs = st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    cosines = (ours * theirs).sum(axis=1)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    assert cosines.min() >= 0.99999, cosines.min()
    assert sum(r.truncated for r in report) >= 10  # the corpus does cross the 256-token limit


def test_default_precision_stays_close_to_fp32(minilm, minilm_fp32):
    assert minilm.precision in ("bf16", "fp32")
    texts = code_corpus(200, seed=2)
    cosines = (minilm.encode(texts) * minilm_fp32.encode(texts)).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines.min()


def test_rows_come_back_in_input_order(minilm_fp32):
    texts = mixed_texts()
    together = minilm_fp32.encode(texts, batch_size=7, token_budget=512)
    one_by_one = np.stack([minilm_fp32.encode(t)[0] for t in texts[:12]])
    np.testing.assert_allclose(together[:12], one_by_one, atol=2e-5)


def test_truncation_report_is_per_item(minilm_fp32):
    long_text = "token " * 1000
    huge = "word " * 40_000
    _, report = minilm_fp32.encode(["short", long_text, huge, "x" * 200_000], return_report=True)
    assert not report[0].truncated and report[0].tokens == report[0].tokens_used == 3
    assert report[1].truncated and report[1].tokens == 1002 and report[1].tokens_used == 256
    assert report[2].truncated and report[2].chars_capped and report[2].chars == 200_000
    # One 200,000-character "word" is a single [UNK]: capped, then re-read whole, not truncated.
    assert not report[3].truncated and not report[3].chars_capped and report[3].tokens == 3


def test_character_cap_never_loses_tokens_that_fit(minilm_fp32):
    # 9,000 spaces then a word: past the character cap, but only 3 tokens.
    text = " " * 9000 + "hello"
    vec, report = minilm_fp32.encode([text], return_report=True)
    assert not report[0].truncated and report[0].tokens_used == 3
    assert similarity(vec[0], minilm_fp32.encode("hello")[0]) > 0.9999


def test_empty_string_is_a_fixed_unit_vector(minilm_fp32):
    a, b = minilm_fp32.encode(["", ""])
    assert abs(np.linalg.norm(a) - 1) < 1e-5 and np.array_equal(a, b)


def test_non_string_is_a_type_error(minilm_fp32):
    with pytest.raises(TypeError, match="text 1 is int"):
        minilm_fp32.encode(["ok", 3])


def test_no_texts_gives_an_empty_matrix(minilm_fp32):
    assert minilm_fp32.encode([]).shape == (0, 384)


def test_unnormalized_output_is_the_mean_pool(minilm_fp32):
    raw = minilm_fp32.encode(["def f(): pass"], normalize=False)
    assert abs(np.linalg.norm(raw) - 1) > 1e-3


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_tiny_qwen2_last_token_matches_direct_computation(tmp_path, padding_side):
    folder = build_tiny_qwen2(tmp_path / "q", sharded=True, padding_side=padding_side)
    encoder = Encoder.load(str(folder), device="cpu", precision="fp32")
    assert encoder.spec.pooling == "last_token" and encoder.load_reports[0].shards > 1
    texts = ["def hello_world(): return 42", "class MyClass: pass", "x"]
    got = encoder.encode(texts)
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = torch.tensor([encoder.tokenizer(text)["input_ids"]])
            hidden = encoder.model(input_ids=ids).last_hidden_state[0, -1]
            want = torch.nn.functional.normalize(hidden, dim=0).numpy()
            np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_tiny_jina_v3_mean_pooling_matches_direct_computation(tiny_jina_dir):
    encoder = Encoder.load(str(tiny_jina_dir), device="cpu", precision="fp32")
    assert encoder.spec.architecture == "jina_embeddings_v3" and encoder.spec.pooling == "mean"
    texts = ["SELECT * FROM users WHERE id = 1", "const API_URL = 'x'", "a"]
    got = encoder.encode(texts)
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = torch.tensor([encoder.tokenizer(text)["input_ids"]])
            hidden = encoder.model(input_ids=ids).last_hidden_state[0].mean(0)
            want = torch.nn.functional.normalize(hidden, dim=0).numpy()
            np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_prompts_and_matryoshka_truncation(tiny_jina_dir, tmp_path):
    folder = tmp_path / "jina"
    import shutil

    shutil.copytree(tiny_jina_dir, folder)
    write_st_pooling(folder, "mean", 64, prompts={"retrieval.query": "query: "})
    base = spec_from_folder(folder)
    spec = specs.replace(base, matryoshka_dims=(16, 32, 64))
    encoder = Encoder.load(spec, device="cpu", precision="fp32")
    plain = encoder.encode(["find users"])
    prompted = encoder.encode(["find users"], task="retrieval.query")
    assert not np.allclose(plain, prompted)
    np.testing.assert_allclose(prompted, encoder.encode(["query: find users"]), atol=1e-6)
    short = encoder.encode(["find users"], truncate_dim=16)
    assert short.shape == (1, 16) and abs(np.linalg.norm(short) - 1) < 1e-5
    full = encoder.encode(["find users"], normalize=False)
    want = full[0, :16] / np.linalg.norm(full[0, :16])
    np.testing.assert_allclose(short[0], want, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim"):
        encoder.encode(["x"], truncate_dim=20)


def test_combined_encoder_concatenates_members(tiny_qwen2_dir, tiny_jina_dir):
    specs.register(specs.replace(spec_from_folder(tiny_qwen2_dir), name="tq"))
    specs.register(specs.replace(spec_from_folder(tiny_jina_dir), name="tj"))
    specs.register(ModelSpec(name="tcombo", source="combined", members=("tq", "tj"), dim=128))
    try:
        combo = load_encoder("tcombo", device="cpu", precision="fp32")
        assert isinstance(combo, CombinedEncoder) and combo.dim == 128
        # One interface for loaded models: a report per member, each member a one-element list.
        assert [len(m.load_reports) for m in combo.members] == [1, 1]
        assert [r.model for r in combo.load_reports] == ["tq", "tj"]
        texts = ["def a(): pass", "SELECT 1"]
        vectors = combo.encode(texts)
        assert vectors.shape == (2, 128)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        parts = [m.encode(texts) for m in combo.members]
        joined = np.concatenate(parts, axis=1) / np.sqrt(2)
        np.testing.assert_allclose(vectors, joined, atol=1e-5)
    finally:
        for name in ("tq", "tj", "tcombo"):
            specs._registry.pop(name)


def test_similarity_helpers():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    m = similarity_matrix(a)
    assert m.shape == (3, 3) and abs(m[0, 2] - 2**-0.5) < 1e-9 and abs(m[0, 1]) < 1e-12
    assert abs(similarity(a[0], a[2]) - 2**-0.5) < 1e-9


def test_inference_twin_follows_weight_updates():
    """The bf16 inference twin is rebuilt when training changes the fp32 weights."""
    encoder = Encoder.load("minilm", device="cpu", precision="bf16")
    if encoder.precision != "bf16":
        pytest.skip("this CPU has no bf16 support")
    before = encoder.encode(["def f(): return 1"])
    with torch.no_grad():
        for module in encoder.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(0.5)
    after = encoder.encode(["def f(): return 1"])
    assert similarity(before[0], after[0]) < 0.999
    assert all(p.dtype == torch.float32 for p in encoder.model.parameters())


def test_prompts_from_the_folder_fill_the_gaps_of_a_spec(tiny_jina_dir, tmp_path):
    """A hub model's own sentence-transformers prompts are used when the spec names none."""
    import shutil

    folder = tmp_path / "jina"
    shutil.copytree(tiny_jina_dir, folder)
    write_st_pooling(folder, "mean", 64, prompts={"query": "query: ", "retrieval.query": "q: "})
    bare = specs.replace(spec_from_folder(folder), prompts={"retrieval.query": "Find: "})
    encoder = Encoder.load(bare, device="cpu", precision="fp32")
    assert encoder.spec.prompts == {"retrieval.query": "Find: ", "query": "query: "}
    np.testing.assert_allclose(
        encoder.encode(["x"], task="query"), encoder.encode(["query: x"]), atol=1e-6
    )
    np.testing.assert_allclose(
        encoder.encode(["x"], task="retrieval.query"), encoder.encode(["Find: x"]), atol=1e-6
    )
