"""Pooling against direct computation and against sentence-transformers' own Pooling module."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from embedding.models.pooling import (
    POOLING_MODES,
    config_for,
    dimension_from_config,
    mode_from_config,
    pool,
)
from embedding.models.specs import spec_from_folder
from tests.tiny_models import MINILM_DIR

# Our mode names -> sentence-transformers' mode names.
ST_NAMES = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}


def test_pool_last_token_left_and_right_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, right, "last_token"), hidden[[0, 1], [1, 3]])
    assert torch.equal(pool(hidden, left, "last_token"), hidden[[0, 1], [3, 3]])
    assert torch.equal(pool(hidden, right, "cls"), hidden[:, 0])
    assert torch.allclose(pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))


def test_mean_ignores_padding_on_either_side():
    hidden = torch.randn(1, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1]])
    assert torch.allclose(pool(hidden, right, "mean")[0], hidden[0, :3].mean(0))
    assert torch.allclose(pool(hidden, left, "mean")[0], hidden[0, 2:].mean(0))


@pytest.mark.parametrize("mode", ["mean", "last_token"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_pool_matches_sentence_transformers(mode, side):
    from sentence_transformers.models import Pooling

    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 7, 8, generator=generator)
    lengths = [7, 5, 2, 1]
    mask = torch.zeros(4, 7, dtype=torch.long)
    for row, n in enumerate(lengths):
        if side == "left":
            mask[row, 7 - n :] = 1
        else:
            mask[row, :n] = 1
    theirs = Pooling(8, ST_NAMES[mode])({"token_embeddings": hidden, "attention_mask": mask})[
        "sentence_embedding"
    ]
    torch.testing.assert_close(pool(hidden, mask, mode), theirs, rtol=1e-6, atol=1e-6)


def test_cls_matches_sentence_transformers_with_right_padding():
    from sentence_transformers.models import Pooling

    hidden = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    theirs = Pooling(8, "cls")({"token_embeddings": hidden, "attention_mask": mask})
    torch.testing.assert_close(pool(hidden, mask, "cls"), theirs["sentence_embedding"])


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "max")


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_our_config_is_read_by_sentence_transformers_as_the_same_mode(mode, tmp_path):
    from sentence_transformers.models import Pooling

    (tmp_path / "config.json").write_text(json.dumps(config_for(mode, 16)))
    loaded = Pooling.load(str(tmp_path))
    assert loaded.get_config_dict()["pooling_mode"] == ST_NAMES[mode]
    assert loaded.get_config_dict()["embedding_dimension"] == 16
    assert mode_from_config(config_for(mode, 16)) == mode


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_configs_saved_by_sentence_transformers_are_read(mode, tmp_path):
    """sentence-transformers >= 6 saves ``pooling_mode`` instead of the old flags."""
    from sentence_transformers.models import Pooling

    Pooling(16, ST_NAMES[mode]).save(str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert mode_from_config(saved) == mode and dimension_from_config(saved) == 16


def test_modes_we_do_not_pool_select_nothing():
    assert mode_from_config({"pooling_mode": "max"}) is None
    assert mode_from_config({"pooling_mode": ["cls", "mean"]}) is None
    assert mode_from_config({"pooling_mode_max_tokens": True}) is None


def test_a_folder_saved_by_sentence_transformers_6_gets_its_pooling(tmp_path):
    from sentence_transformers.models import Pooling

    folder = tmp_path / "m"
    shutil.copytree(MINILM_DIR, folder)
    shutil.rmtree(folder / "1_Pooling")
    (folder / "1_Pooling").mkdir()
    Pooling(384, "cls").save(str(folder / "1_Pooling"))
    spec = spec_from_folder(folder)
    assert spec.pooling == "cls" and spec.dim == 384
