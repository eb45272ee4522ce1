"""Safetensors inventory and validation, without reading tensor data.

Why our own header reader: a model folder is untrusted input. Before any loader touches
it we check every shard's header (length within the file, JSON, known dtypes, shapes that
match byte ranges, ranges inside the data and not overlapping) and refuse pickle-based
formats outright. The same pass gives the figures of a :class:`LoadReport` (tensor count,
dtypes, parameters, bytes) from headers alone.

File layout (https://github.com/huggingface/safetensors): 8-byte little-endian header
length N, N bytes of JSON ``{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__}``,
then the data; offsets are relative to the start of the data.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
    "F4": 0.5,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own cap
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
INDEX_NAME = "model.safetensors.index.json"


class WeightsError(ValueError):
    """Base class: the weights cannot be used. The message names the file and the problem."""


class CorruptWeights(WeightsError):
    """A safetensors file whose header or layout is invalid or truncated."""


class UnsafeWeightsFormat(WeightsError):
    """Weights in a pickle-based format (.bin, .pt, ...): refused, never loaded."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ShardInventory:
    path: Path
    file_bytes: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]


@dataclass
class WeightsInventory:
    """What is in a model's safetensors files, from their headers."""

    shards: list[ShardInventory]

    @property
    def tensor_count(self) -> int:
        return sum(len(s.tensors) for s in self.shards)

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for s in self.shards for t in s.tensors)

    @property
    def size_bytes(self) -> int:
        return sum(s.file_bytes for s in self.shards)

    @property
    def dtypes(self) -> dict[str, int]:
        return dict(Counter(t.dtype for s in self.shards for t in s.tensors))


@dataclass
class LoadReport:
    """The figures the validation suite and the ``load_model`` task report for a load."""

    model: str
    source: str  # bundled / local / hf-cache / hub-download
    path: str
    load_time_ms: float
    size_mb: float
    tensor_count: int
    parameter_count: int
    dtypes: dict[str, int]
    shards: int
    weights_present: bool
    device: str = "cpu"
    precision: str = "fp32"
    tried: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)  # per-task LoRA adapters loaded

    def to_dict(self) -> dict:
        return asdict(self)


def read_header(path: str | Path) -> ShardInventory:
    """Read and validate one safetensors file's header; never reads tensor data."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeWeightsFormat(
            f"{path}: {path.suffix} weights are pickle-based and are refused; "
            "convert them to safetensors"
        )
    try:
        file_bytes = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CorruptWeights(f"{path}: file too short for a safetensors header")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise CorruptWeights(
                    f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES} cap"
                )
            if 8 + n > file_bytes:
                raise CorruptWeights(
                    f"{path}: header length {n} runs past the end of the file ({file_bytes} bytes)"
                )
            raw = fh.read(n)
    except OSError as exc:
        raise CorruptWeights(f"{path}: cannot read ({exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptWeights(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CorruptWeights(f"{path}: header is not a JSON object")
    data_bytes = file_bytes - 8 - n
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptWeights(f"{path}: __metadata__ is not an object")
    tensors = [_tensor_info(path, name, entry, data_bytes) for name, entry in header.items()]
    _check_layout(path, tensors, data_bytes)
    return ShardInventory(
        path=path,
        file_bytes=file_bytes,
        tensors=tuple(tensors),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def _tensor_info(path: Path, name: str, entry: object, data_bytes: int) -> TensorInfo:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise CorruptWeights(f"{where}: entry is not an object")
    dtype = entry.get("dtype")
    if dtype not in DTYPE_BYTES:
        raise CorruptWeights(f"{where}: unknown dtype {dtype!r}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CorruptWeights(f"{where}: shape {shape!r} is not a list of non-negative integers")
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise CorruptWeights(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise CorruptWeights(
            f"{where}: data_offsets [{begin}, {end}] out of range (data is {data_bytes} bytes)"
        )
    expected = math.prod(shape) * DTYPE_BYTES[dtype]
    if expected != end - begin:
        raise CorruptWeights(
            f"{where}: {dtype} shape {shape} needs {expected:g} bytes, offsets give {end - begin}"
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_layout(path: Path, tensors: list[TensorInfo], data_bytes: int) -> None:
    """Tensors must tile the data exactly: no overlap, no gap, nothing after the last one.

    The same rule the safetensors library enforces, so a file we accept is one it loads.
    """
    position = 0
    previous: TensorInfo | None = None
    for info in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if info.begin < position:
            raise CorruptWeights(
                f"{path}: tensors {previous.name!r} and {info.name!r} overlap in the data"
            )
        if info.begin > position:
            raise CorruptWeights(f"{path}: gap in the data before tensor {info.name!r}")
        position = info.end
        previous = info
    if position != data_bytes:
        raise CorruptWeights(
            f"{path}: tensors cover {position} of {data_bytes} data bytes (file not fully covered)"
        )


def safetensors_files(folder: str | Path) -> list[Path]:
    """The safetensors shards of a model folder (via the index json when sharded).

    Raises :class:`UnsafeWeightsFormat` when the folder holds only pickle-based weights,
    and :class:`CorruptWeights` when an index names a missing shard.
    """
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptWeights(f"{index}: not a valid safetensors index ({exc})") from exc
        files = []
        for name in names:
            shard = (folder / name).resolve()
            if folder.resolve() not in shard.parents:
                raise CorruptWeights(f"{index}: shard {name!r} lies outside the model folder")
            if not shard.is_file():
                raise CorruptWeights(f"{index}: shard {name!r} is missing")
            files.append(shard)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    unsafe = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if unsafe:
        raise UnsafeWeightsFormat(
            f"{folder}: only pickle-based weights ({', '.join(unsafe)}); they are refused. "
            "Convert them to safetensors."
        )
    raise CorruptWeights(f"{folder}: no safetensors weights found")


def inventory(folder: str | Path) -> WeightsInventory:
    """Validate every shard's header and sum up what the model holds."""
    return WeightsInventory(shards=[read_header(p) for p in safetensors_files(folder)])
