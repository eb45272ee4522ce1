"""Fuzzing the safetensors header reader: 10,000+ generated headers, two outcomes allowed.

Either the reader accepts the file — and then the safetensors library itself loads every
tensor it listed — or it raises our own ``WeightsError``. Nothing else: no crash, no
other exception type, no file we accept that the real loader then rejects.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from embedding.models.weights import DTYPE_BYTES, WeightsError, read_header

pytestmark = pytest.mark.slow

_DIR = Path(tempfile.mkdtemp(prefix="fuzz-safetensors-"))
# dtypes torch can materialize (safetensors.torch maps these); F4/F8_E8M0 are header-only.
_TORCH_DTYPES = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "I64", "F64"]

dims = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=3)
dtype = st.one_of(
    st.sampled_from(_TORCH_DTYPES), st.sampled_from(sorted(DTYPE_BYTES)), st.text(max_size=5)
)


@st.composite
def plausible_file(draw) -> bytes:
    """Mostly-valid layouts with one thing possibly wrong: offsets, sizes, dtypes, lengths."""
    count = draw(st.integers(min_value=0, max_value=4))
    header: dict[str, object] = {}
    offset = 0
    for i in range(count):
        dt = draw(dtype)
        shape = draw(dims)
        numel = 1
        for d in shape:
            numel *= d
        size = int(numel * DTYPE_BYTES.get(dt, 4))
        begin = offset + draw(st.sampled_from([0, 0, 0, -4, 4]))
        end = begin + size + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
        header[f"t{i}"] = {"dtype": dt, "shape": shape, "data_offsets": [begin, end]}
        offset = max(offset, end)
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    declared = len(raw) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 1000, 2**40]))
    data = bytes(max(0, offset + draw(st.sampled_from([0, 0, 0, -1, 3]))))
    return struct.pack("<Q", max(0, declared)) + raw + data


raw_file = st.one_of(
    plausible_file(),
    st.binary(max_size=64),
    st.builds(
        lambda n, body: struct.pack("<Q", n) + body,
        st.integers(0, 2**64 - 1),
        st.binary(max_size=64),
    ),
    st.builds(
        lambda value: (lambda b: struct.pack("<Q", len(b)) + b)(json.dumps(value).encode()),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=4),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    ),
)


@settings(max_examples=5_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw_file)
def test_reader_accepts_only_what_safetensors_loads(blob: bytes) -> None:
    path = _DIR / "fuzz.safetensors"
    path.write_bytes(blob)
    try:
        shard = read_header(path)
    except WeightsError:
        return
    if not all(t.dtype in _TORCH_DTYPES for t in shard.tensors):
        return  # header-only dtypes: nothing torch could materialize to compare against
    tensors = load_file(str(path))
    assert set(tensors) == {t.name for t in shard.tensors}
    for info in shard.tensors:
        assert tuple(tensors[info.name].shape) == info.shape
