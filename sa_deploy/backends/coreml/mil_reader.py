"""Read a saved .mlpackage back: Manifest.json -> model.mlmodel (protobuf spec) -> mlProgram + weights/weight.bin.

Values are decoded to numpy here (immediate tensors from the protobuf, blob values through coremltools'
``libmilstoragepython`` reader, which is shipped on Linux too). Nothing in this module executes anything."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sa_deploy.errors import SADeployError
from sa_deploy.util.optional import require

# MIL DataType enum name -> (numpy storage dtype, bits); sub-byte types are unpacked to one element per uint8/int8
_DTYPES: dict[str, tuple[Any, int]] = {
    "BOOL": (np.bool_, 8), "FLOAT16": (np.float16, 16), "FLOAT32": (np.float32, 32), "FLOAT64": (np.float64, 64),
    "INT8": (np.int8, 8), "INT16": (np.int16, 16), "INT32": (np.int32, 32), "INT64": (np.int64, 64),
    "UINT8": (np.uint8, 8), "UINT16": (np.uint16, 16), "UINT32": (np.uint32, 32), "UINT64": (np.uint64, 64),
    "INT4": (np.int8, 4), "UINT4": (np.uint8, 4), "UINT2": (np.uint8, 2), "UINT1": (np.uint8, 1),
    "UINT6": (np.uint8, 6), "UINT3": (np.uint8, 3),
}
# blob reader method per MIL type (the reader unpacks sub-byte types itself)
_BLOB_READ = {"FLOAT32": "read_float_data", "FLOAT16": "read_fp16_data", "INT8": "read_int8_data",
              "UINT8": "read_uint8_data", "INT16": "read_int16_data", "UINT16": "read_uint16_data",
              "INT32": "read_int32_data", "UINT32": "read_uint32_data", "INT4": "read_int4_data",
              "UINT4": "read_uint4_data", "UINT2": "read_uint2_data", "UINT1": "read_uint1_data",
              "UINT3": "read_uint3_data", "UINT6": "read_uint6_data"}


def _proto():
    return require("coremltools.proto", "coreml", "reading an .mlpackage")


def dtype_name(code: int) -> str:
    return _proto().MIL_pb2.DataType.Name(code)


def numpy_dtype(code: int) -> Any:
    name = dtype_name(code)
    if name not in _DTYPES:
        raise SADeployError(f"MIL data type {name} is not supported by the reference executor")
    return _DTYPES[name][0]


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool = False) -> np.ndarray:
    """Sub-byte elements packed little-endian (first element in the lowest bits) -> one element per byte."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: count * nbits].reshape(count, nbits)
    values = (bits.astype(np.int32) << np.arange(nbits, dtype=np.int32)).sum(1)
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
    return values.astype(np.int8 if signed else np.uint8)


def tensor_shape(value_type) -> tuple[int, ...]:
    """Static shape of a MIL ValueType (tensor); a dynamic dimension is an error (our exports are static)."""
    tt = value_type.tensorType
    dims = []
    for d in tt.dimensions:
        if d.WhichOneof("dimension") != "constant":
            raise SADeployError("the reference executor needs static shapes (got a flexible dimension)")
        dims.append(int(d.constant.size))
    return tuple(dims)


@dataclass
class MLPackage:
    path: Path
    spec: Any  # coremltools.proto.Model_pb2.Model
    weights_dir: Path

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.spec.description.metadata.userDefined)


def read_mlpackage(path: str | Path) -> MLPackage:
    """The model spec of an .mlpackage, found through its Manifest (rootModelIdentifier)."""
    proto = _proto()
    root = Path(path)
    manifest_file = root / "Manifest.json"
    if not manifest_file.is_file():
        raise SADeployError(f"{root} is not an .mlpackage (no Manifest.json)")
    manifest = json.loads(manifest_file.read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    spec_file = root / "Data" / entry["path"]
    spec = proto.Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    if spec.WhichOneof("Type") != "mlProgram":
        raise SADeployError(f"{root.name} is not an ML program (type {spec.WhichOneof('Type')})")
    return MLPackage(root, spec, spec_file.parent / "weights")


class ValueDecoder:
    """MIL ``Value`` protobufs -> numpy arrays (or lists of strings/values)."""

    def __init__(self, weights_dir: Path) -> None:
        self.weights_dir = weights_dir
        self._readers: dict[str, Any] = {}

    def _blob(self, file_name: str) -> Any:
        if file_name not in self._readers:
            storage = require("coremltools.libmilstoragepython", "coreml", "reading weight.bin")
            # "@model_path/weights/weight.bin" -> <package>/Data/com.apple.CoreML/weights/weight.bin
            self._readers[file_name] = storage._BlobStorageReader(str(self.weights_dir / file_name.split("/")[-1]))
        return self._readers[file_name]

    def decode(self, value) -> Any:
        kind = value.type.WhichOneof("type")
        if kind == "listType" or value.immediateValue.WhichOneof("value") == "list":
            return [self.decode(v) for v in value.immediateValue.list.values]
        if kind != "tensorType":
            raise SADeployError(f"MIL value of type {kind} is not supported by the reference executor")
        code = value.type.tensorType.dataType
        name = dtype_name(code)
        shape = tensor_shape(value.type)
        count = int(np.prod(shape)) if shape else 1
        if value.WhichOneof("value") == "blobFileValue":
            if name not in _BLOB_READ:
                raise SADeployError(f"blob values of type {name} are not supported by the reference executor")
            raw = getattr(self._blob(value.blobFileValue.fileName), _BLOB_READ[name])(value.blobFileValue.offset)
            arr = np.asarray(raw)
            if name == "FLOAT16":  # the reader hands fp16 back as raw uint16 bits
                arr = arr.view(np.float16)
            return arr[:count].astype(numpy_dtype(code), copy=False).reshape(shape)
        return self._immediate(value.immediateValue.tensor, name, shape, count)

    def _immediate(self, tensor, name: str, shape: tuple[int, ...], count: int) -> np.ndarray | str:
        which = tensor.WhichOneof("value")
        np_dtype, nbits = _DTYPES.get(name, (None, 0))
        if which == "strings":
            vals = list(tensor.strings.values)
            return vals[0] if not shape else np.asarray(vals, dtype=object).reshape(shape)
        if which == "bytes":
            raw = np.frombuffer(tensor.bytes.values, np.uint8)
            if nbits < 8:
                return unpack_bits(raw, nbits, count, signed=name == "INT4").reshape(shape)
            return np.frombuffer(tensor.bytes.values, np_dtype)[:count].reshape(shape).copy()
        source = {"floats": tensor.floats, "ints": tensor.ints, "bools": tensor.bools, "longInts": tensor.longInts,
                  "doubles": tensor.doubles}.get(which)
        if source is None:
            raise SADeployError(f"immediate MIL tensor stored as '{which}' is not supported")
        return np.asarray(list(source.values)).astype(np_dtype).reshape(shape)
