"""The safetensors header reader: figures equal an independent read; corrupt files are refused."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from embedding.models.weights import (
    CorruptWeights,
    UnsafeWeightsFormat,
    inventory,
    read_header,
    safetensors_files,
)
from tests.tiny_models import MINILM_DIR


def write_raw(
    path: Path, header: dict | bytes, data: bytes, declared_len: int | None = None
) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if declared_len is None else declared_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def test_inventory_matches_an_independent_read_of_minilm():
    inv = inventory(MINILM_DIR)
    count, params, dtypes = 0, 0, {}
    with safe_open(str(MINILM_DIR / "model.safetensors"), framework="pt") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open is not iterable
            tensor = fh.get_slice(name)
            count += 1
            shape = tensor.get_shape()
            n = 1
            for d in shape:
                n *= d
            params += n
            dtype = tensor.get_dtype()
            dtypes[dtype] = dtypes.get(dtype, 0) + 1
    assert inv.tensor_count == count > 100
    assert inv.parameter_count == params
    assert inv.dtypes == dtypes
    assert inv.size_bytes == (MINILM_DIR / "model.safetensors").stat().st_size


def test_sharded_model_is_read_through_its_index(tiny_qwen2_dir):
    files = safetensors_files(tiny_qwen2_dir)
    index = json.loads((tiny_qwen2_dir / "model.safetensors.index.json").read_text())
    assert {f.name for f in files} == set(index["weight_map"].values())
    assert len(files) > 1
    inv = inventory(tiny_qwen2_dir)
    assert inv.tensor_count == len(index["weight_map"])


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize(
    ("header", "data", "declared", "message"),
    [
        (GOOD, b"\0" * 16, 10_000, "runs past the end"),
        (GOOD, b"", 2**62, "exceeds"),
        (b"{not json", b"", None, "not valid JSON"),
        (b"\xff\xfe\x00", b"", None, "not valid JSON"),
        (b"[1, 2]", b"", None, "not a JSON object"),
        (
            {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 64]}},
            b"\0" * 16,
            None,
            "out of range",
        ),
        (
            {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 4]}},
            b"\0" * 16,
            None,
            "out of range",
        ),
        (
            {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}},
            b"\0" * 16,
            None,
            "needs 24 bytes",
        ),
        (
            {"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            "unknown dtype",
        ),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "shape"),
        (
            {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}},
            b"\0" * 4,
            None,
            "data_offsets",
        ),
        ({"w": [1, 2]}, b"", None, "not an object"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            None,
            "overlap",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            b"\0" * 12,
            None,
            "gap",
        ),
        (GOOD, b"\0" * 20, None, "not fully covered"),
    ],
    ids=[
        "header-past-end",
        "header-huge",
        "bad-json",
        "not-utf8",
        "not-object",
        "offsets-past-data",
        "offsets-reversed",
        "dtype-shape-mismatch",
        "unknown-dtype",
        "negative-dim",
        "one-offset",
        "entry-not-object",
        "overlapping",
        "gap",
        "trailing-bytes",
    ],
)
def test_corrupt_headers_get_a_clear_error(tmp_path, header, data, declared, message):
    path = write_raw(tmp_path / "model.safetensors", header, data, declared)
    with pytest.raises(CorruptWeights, match=message) as info:
        read_header(path)
    assert str(path) in str(info.value)


def test_truncated_real_file_is_refused(tmp_path):
    raw = (MINILM_DIR / "model.safetensors").read_bytes()
    cut = tmp_path / "model.safetensors"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptWeights, match="out of range"):
        read_header(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(CorruptWeights, match="too short"):
        read_header(tiny)


def test_a_valid_hand_written_file_reads(tmp_path):
    path = write_raw(
        tmp_path / "ok.safetensors", {**GOOD, "__metadata__": {"format": "pt"}}, b"\0" * 16
    )
    shard = read_header(path)
    assert shard.tensors[0].shape == (2, 2)
    assert shard.metadata == {"format": "pt"}


@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "model.pt", "weights.pth", "w.pkl", "m.ckpt"]
)
def test_pickle_formats_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeWeightsFormat, match="pickle"):
        safetensors_files(tmp_path)
    with pytest.raises(UnsafeWeightsFormat, match="refused"):
        read_header(tmp_path / name)


def test_index_naming_a_missing_shard_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(CorruptWeights, match="missing"):
        safetensors_files(tmp_path)


def test_index_pointing_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "../elsewhere.safetensors"}})
    )
    with pytest.raises(CorruptWeights, match="outside"):
        safetensors_files(tmp_path)


def test_empty_folder_has_no_weights(tmp_path):
    with pytest.raises(CorruptWeights, match="no safetensors"):
        safetensors_files(tmp_path)
