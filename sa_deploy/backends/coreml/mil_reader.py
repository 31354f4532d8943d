"""Read a saved .mlpackage back: Manifest.json -> model.mlmodel (protobuf spec) -> mlProgram + weights/weight.bin.

Values are decoded to numpy here (immediate tensors from the protobuf, blob values through coremltools'
``libmilstoragepython`` reader, which is shipped on Linux too). Nothing in this module executes anything."""
from __future__ import annotations

import json
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sa_deploy.errors import SADeployError
from sa_deploy.models.deploy_metadata import PREFIX, DeployMetadata
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


BLOB_SENTINEL = 0xDEADBEEF  # every blob's metadata record in weight.bin starts with it
_BLOB_RECORD = 64  # bytes: sentinel u32, mil dtype u32, size u64, data offset u64, reserved
MAX_SPEC_BYTES = 1 << 31  # protobuf's own limit
MAX_MANIFEST_BYTES = 1 << 20


class MLPackageError(SADeployError):
    """An .mlpackage that is damaged or not one: named with what is wrong."""


def _proto():
    return require("coremltools.proto", "coreml", "reading an .mlpackage")


def dtype_name(code: int) -> str:
    try:
        return _proto().MIL_pb2.DataType.Name(code)
    except ValueError:
        raise MLPackageError(f"unknown MIL data type code {code} (a damaged model spec?)") from None


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
        """All user metadata of the model description (sa-deploy's ``sa_deploy.*`` keys and the author's)."""
        return dict(self.spec.description.metadata.userDefined)

    @property
    def sa_deploy_strings(self) -> dict[str, str]:
        """The stored string form of the ``sa_deploy.*`` user metadata (keys without the prefix)."""
        return {k[len(PREFIX):]: v for k, v in self.metadata.items() if k.startswith(PREFIX)}

    def deploy_metadata(self) -> DeployMetadata:
        """The CoreML reader: the package's deploy metadata, typed (a damaged value: one line naming the package)."""
        return DeployMetadata.from_strings(self.sa_deploy_strings, self.path.name)


def _regular_file(path: Path, what: str, limit: int) -> Path:
    """``path`` if it is a regular file of at most ``limit`` bytes (never opens a FIFO, device or folder)."""
    try:
        st = path.stat()
    except OSError:
        raise MLPackageError(f"{what} is missing ({path.name})") from None
    if not stat.S_ISREG(st.st_mode):
        raise MLPackageError(f"{what} ({path.name}) is not a regular file")
    if st.st_size > limit:
        raise MLPackageError(f"{what} ({path.name}) is {st.st_size} bytes, more than an .mlpackage holds")
    return path


def _inside(root: Path, relative: object, what: str) -> Path:
    """``root / relative`` when ``relative`` is a relative path that stays inside ``root`` (no '..', no links out)."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise MLPackageError(f"{what} has path {relative!r}; expected a path inside the package")
    target = (root / relative).resolve()
    if root.resolve() not in target.parents:
        raise MLPackageError(f"{what} ({relative}) points outside the package")
    return target


def read_mlpackage(path: str | Path) -> MLPackage:
    """The model spec of an .mlpackage, found through its Manifest (rootModelIdentifier), checked where it enters:
    a folder with a Manifest.json mapping the root model to a regular file inside the package, holding an ML
    program with a ``main`` function. Any damage is one MLPackageError naming the package and the part."""
    proto = _proto()
    root = Path(path)
    name = root.name
    if not root.is_dir():
        raise MLPackageError(f"{root} is not an .mlpackage: " + ("a file, not a folder" if root.exists()
                                                                  else "not found"))
    manifest_file = _regular_file(root / "Manifest.json", f"{name}: Manifest.json", MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(manifest_file.read_bytes())
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        spec_path = entry["path"]
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError / UnicodeDecodeError are ValueErrors
        raise MLPackageError(f"{name}: Manifest.json is damaged ({type(exc).__name__}: {str(exc)[:80]}); "
                             "re-export the package") from None
    spec_file = _regular_file(_inside(root / "Data", spec_path, f"{name}: the root model"),
                              f"{name}: the model spec", MAX_SPEC_BYTES)
    spec = proto.Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends on damaged bytes
        raise MLPackageError(f"{name}: the model spec is damaged ({type(exc).__name__})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise MLPackageError(f"{name} is not an ML program (type {spec.WhichOneof('Type')})")
    functions = spec.mlProgram.functions
    if "main" not in functions or functions["main"].opset not in functions["main"].block_specializations:
        raise MLPackageError(f"{name}: the ML program has no 'main' function with a block for its opset")
    if not spec.description.input or not spec.description.output:
        raise MLPackageError(f"{name}: the model declares no input or no output")
    return MLPackage(root, spec, spec_file.parent / "weights")


def read_mlpackage_metadata(path: str | Path) -> DeployMetadata:
    """The deploy metadata of a saved .mlpackage (read from its spec: nothing compiled or loaded by coremltools)."""
    return read_mlpackage(path).deploy_metadata()


def check_mlpackage(path: str | Path) -> MLPackage:
    """read_mlpackage, then every constant of ``main`` decoded (each weight blob checked in weight.bin first), so a
    damaged package fails here, with its name, before any data is read."""
    package = read_mlpackage(path)
    fn = package.spec.mlProgram.functions["main"]
    decoder = ValueDecoder(package.weights_dir)
    for op in fn.block_specializations[fn.opset].operations:
        if op.type == "const" and "val" in op.attributes:
            decoder.decode(op.attributes["val"])
    return package


class ValueDecoder:
    """MIL ``Value`` protobufs -> numpy arrays (or lists of strings/values)."""

    def __init__(self, weights_dir: Path) -> None:
        self.weights_dir = weights_dir
        # <name>.mlpackage/Data/com.apple.CoreML/weights: errors name the package
        self.package_name = next((p.name for p in weights_dir.parents if p.suffix == ".mlpackage"), "")
        self._readers: dict[str, Any] = {}

    def _blob_file(self, file_name: str) -> Path:
        # "@model_path/weights/weight.bin" -> <package>/Data/com.apple.CoreML/weights/weight.bin
        path = self.weights_dir / file_name.split("/")[-1]
        return _regular_file(path, f"{self.package_name}: weight file {path.name}", 1 << 40)

    def _blob(self, file_name: str) -> Any:
        if file_name not in self._readers:
            storage = require("coremltools.libmilstoragepython", "coreml", "reading weight.bin")
            try:
                self._readers[file_name] = storage._BlobStorageReader(str(self._blob_file(file_name)))
            except (RuntimeError, ValueError, OSError) as exc:
                raise MLPackageError(f"{self.package_name}: cannot open weight file {file_name}: {str(exc)[:120]}") \
                    from None
        return self._readers[file_name]

    def check_blob(self, file_name: str, offset: int, nbytes: int) -> None:
        """The blob record at ``offset`` of a weight file is intact and its data (``nbytes`` at least) lies inside
        the file; checked in Python before coremltools' reader maps it."""
        path = self._blob_file(file_name)
        size = path.stat().st_size
        where = f"{self.package_name}: weight file {path.name}"
        if offset < 0 or offset + _BLOB_RECORD > size:
            raise MLPackageError(f"{where}: blob offset {offset} is outside the file ({size} bytes; truncated?)")
        with open(path, "rb") as f:
            f.seek(offset)
            sentinel, _, length, data_offset = struct.unpack("<IIQQ", f.read(24))
        if sentinel != BLOB_SENTINEL:
            raise MLPackageError(f"{where}: no blob record at offset {offset} (damaged file)")
        if length < nbytes or data_offset + length > size:
            raise MLPackageError(f"{where}: the blob at offset {offset} needs bytes {data_offset}.."
                                 f"{data_offset + max(length, nbytes)} of {size} (truncated?)")

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
        try:
            if value.WhichOneof("value") == "blobFileValue":
                if name not in _BLOB_READ:
                    raise SADeployError(f"blob values of type {name} are not supported by the reference executor")
                blob = value.blobFileValue
                self.check_blob(blob.fileName, blob.offset, (count * _DTYPES[name][1] + 7) // 8)
                try:
                    raw = getattr(self._blob(blob.fileName), _BLOB_READ[name])(blob.offset)
                except (RuntimeError, ValueError) as exc:
                    raise MLPackageError(f"{self.package_name}: cannot read the blob at offset {blob.offset} of "
                                         f"{blob.fileName}: {str(exc)[:120]}") from None
                arr = np.asarray(raw)
                if name == "FLOAT16":  # the reader hands fp16 back as raw uint16 bits
                    arr = arr.view(np.float16)
                return arr[:count].astype(numpy_dtype(code), copy=False).reshape(shape)
            return self._immediate(value.immediateValue.tensor, name, shape, count)
        except (ValueError, TypeError, IndexError) as exc:  # sizes in the spec that the data does not have
            raise MLPackageError(f"{self.package_name}: a {name} value of shape {shape} does not match its stored data "
                                 f"({str(exc)[:100]}; a damaged package?)") from None

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
