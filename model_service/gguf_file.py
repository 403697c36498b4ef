"""Sequential reading of a GGUF file's header: its metadata and where its tensors lie.

`gguf.GGUFReader` maps each of the 262,144 vocabulary strings of a Gemma 3 file
separately (half a minute and 0.6 GB); reading the header front to back takes well
under a second. The weights loader skips array values (the vocabulary), the tokenizer
reads them. Format: ggml-org/ggml docs/gguf.md.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import struct
from os import PathLike
from typing import Any

import gguf
import numpy as np

from model_service.checkpoints import CheckpointError


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lies in a GGUF file.

    Attributes:
        shape: GGUF order, fastest axis first (`[d_model, vocab]` for the embedding).
        qtype: the ggml type (F32, Q8_0, Q4_K, ...).
        offset: of its first byte in the file.
    """

    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    offset: int

    def array(self, data: np.ndarray) -> np.ndarray:
        """The tensor's bytes in `data` (the whole file) laid out as `gguf` expects:
        float arrays in numpy order, or rows of quantized blocks as uint8."""
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        shape = tuple(reversed(self.shape))
        nbytes = math.prod(shape) * type_size // block_size
        raw = data[self.offset : self.offset + nbytes]
        if self.qtype in _FLOAT_TYPES:
            return raw.view(_FLOAT_TYPES[self.qtype]).reshape(shape)
        return raw.reshape(gguf.quant_shape_to_byte_shape(shape, self.qtype))


_FLOAT_TYPES = {
    gguf.GGMLQuantizationType.F32: np.float32,
    gguf.GGMLQuantizationType.F16: np.float16,
}


def read_metadata(path: str | PathLike[str]) -> dict[str, Any]:
    """All key-value metadata of a GGUF file, arrays included (no tensors).

    Returns:
        key -> value: scalars as Python values, string arrays as lists of str, numeric
        arrays as numpy arrays.

    Raises:
        CheckpointError: not a GGUF file, or a version before 2.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _HeaderReader(m, str(path)).metadata(arrays=True)


def read_header(
    path: str | PathLike[str],
) -> tuple[dict[str, Any], dict[str, TensorInfo]]:
    """The metadata without its arrays, and where each tensor lies: what the weights
    need, without reading the vocabulary.

    Returns:
        (metadata with its scalar and string values, tensor name -> TensorInfo).

    Raises:
        CheckpointError: not a GGUF file, or a version before 2.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        reader = _HeaderReader(m, str(path))
        metadata = reader.metadata(arrays=False)
        alignment = int(metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT))
        return metadata, reader.tensors(alignment)


class _HeaderReader:
    """Reads a GGUF header front to back: `metadata`, then `tensors`."""

    _SCALARS = {
        gguf.GGUFValueType.UINT8: "<B",
        gguf.GGUFValueType.INT8: "<b",
        gguf.GGUFValueType.UINT16: "<H",
        gguf.GGUFValueType.INT16: "<h",
        gguf.GGUFValueType.UINT32: "<I",
        gguf.GGUFValueType.INT32: "<i",
        gguf.GGUFValueType.FLOAT32: "<f",
        gguf.GGUFValueType.BOOL: "<?",
        gguf.GGUFValueType.UINT64: "<Q",
        gguf.GGUFValueType.INT64: "<q",
        gguf.GGUFValueType.FLOAT64: "<d",
    }

    def __init__(self, data: mmap.mmap, name: str) -> None:
        self.data = data
        self.name = name
        self.offset = 0
        self.tensor_count = 0

    def metadata(self, *, arrays: bool) -> dict[str, Any]:
        """The key-value fields; array-valued ones are left out unless `arrays`."""
        if self._unpack("<I") != gguf.GGUF_MAGIC:
            raise CheckpointError(f"{self.name} is not a GGUF file")
        version = self._unpack("<I")
        if version < 2:
            raise CheckpointError(f"{self.name}: GGUF version {version} is too old")
        self.tensor_count, field_count = self._unpack("<Q"), self._unpack("<Q")
        metadata = {}
        for _ in range(field_count):
            key = self._string()
            value_type = gguf.GGUFValueType(self._unpack("<I"))
            if value_type == gguf.GGUFValueType.ARRAY and not arrays:
                self._array(keep=False)
            else:
                metadata[key] = self._value(value_type)
        return metadata

    def tensors(self, alignment: int) -> dict[str, TensorInfo]:
        """The tensor infos, which follow the metadata; their offsets count from the
        data section, which starts at the next multiple of `alignment`."""
        infos = []
        for _ in range(self.tensor_count):
            name = self._string()
            shape = tuple(self._unpack("<Q") for _ in range(self._unpack("<I")))
            qtype = gguf.GGMLQuantizationType(self._unpack("<I"))
            infos.append((name, shape, qtype, self._unpack("<Q")))
        start = -(-self.offset // alignment) * alignment  # round up
        return {
            name: TensorInfo(shape, qtype, start + offset)
            for name, shape, qtype, offset in infos
        }

    def _value(self, value_type: gguf.GGUFValueType) -> Any:
        if value_type == gguf.GGUFValueType.STRING:
            return self._string()
        if value_type == gguf.GGUFValueType.ARRAY:
            return self._array(keep=True)
        return self._unpack(self._SCALARS[value_type])

    def _array(self, *, keep: bool) -> list[Any] | np.ndarray | None:
        """The next array value, or None past it when not `keep`."""
        item_type = gguf.GGUFValueType(self._unpack("<I"))
        count = self._unpack("<Q")
        if item_type == gguf.GGUFValueType.STRING:
            return self._strings(count, keep=keep)
        if item_type == gguf.GGUFValueType.ARRAY:
            return [self._array(keep=keep) for _ in range(count)]
        dtype = np.dtype(self._SCALARS[item_type])
        start = self.offset
        self.offset += count * dtype.itemsize
        return np.frombuffer(self.data, dtype, count, start).copy() if keep else None

    def _string(self) -> str:
        return self._strings(1, keep=True)[0]

    def _strings(self, count: int, *, keep: bool) -> list[str] | None:
        # One tight loop: a vocabulary is a quarter of a million strings, whose
        # lengths must be read even to skip them.
        data, offset = self.data, self.offset
        unpack_length = struct.Struct("<Q").unpack_from
        strings = []
        for _ in range(count):
            (length,) = unpack_length(data, offset)
            offset += 8
            if keep:
                strings.append(data[offset : offset + length].decode("utf-8"))
            offset += length
        self.offset = offset
        return strings if keep else None

    def _unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value
