"""What a saved .mlpackage holds (``sa-deploy inspect X.mlpackage``): inputs/outputs, the op histogram of its ML
program, weight precisions and parameter count, and the deploy config in its user metadata. Read with mil_reader
(the package checked, every weight blob included); nothing is compiled or run, so it works off macOS."""
from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sa_deploy.backends.coreml.mil_reader import check_mlpackage, dtype_name
from sa_deploy.models.deploy_metadata import PREFIX
from sa_deploy.util.optional import require

NOT_WEIGHTS = ("INT32", "INT64", "UINT32", "UINT64", "BOOL", "STRING")


@dataclass
class MLPackageInfo:
    path: Path
    size_bytes: int  # every file in the package
    nodes: int  # operations of ``main``, nested blocks and consts included
    opset: str  # e.g. CoreML6 (iOS16 / macOS13)
    specification_version: int
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    weight_precisions: dict[str, int] = field(default_factory=dict)  # MIL dtype -> constant tensors (rank >= 1)
    parameters: int = 0  # elements of those constants that are weights (float, 8-bit and sub-byte types)
    metadata: dict[str, str] = field(default_factory=dict)  # the sa_deploy.* user metadata, prefix dropped
    author_metadata: dict[str, str] = field(default_factory=dict)  # the rest (coremltools version, source...)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def lines(self) -> list[str]:
        """The headline, then one line per input and output (what ``sa-deploy inspect`` prints above its tables)."""
        weights = ", ".join(f"{t} x{n}" for t, n in self.weight_precisions.items()) or "none"
        head = (f"{self.path}: CoreML ML program ({self.opset}, spec {self.specification_version}), "
                f"{self.size_bytes / 1e6:.2f} MB, {self.nodes} ops, {self.parameters:,} parameters, precision "
                f"{self.metadata.get('precision', '?')} (constants: {weights})")
        return [head] + [f"  {kind} {it['name']}: {it['dtype']} {it['shape']}"
                         for kind, items in (("input", self.inputs), ("output", self.outputs)) for it in items]


def inspect_mlpackage(path: str | Path) -> MLPackageInfo:
    """MLPackageInfo of an .mlpackage; a damaged package is one MLPackageError naming the part (mil_reader)."""
    package = check_mlpackage(path)
    spec = package.spec
    fn = spec.mlProgram.functions["main"]
    ops = list(_operations(fn.block_specializations[fn.opset]))
    precisions: Counter[str] = Counter()
    parameters = 0
    for op in ops:
        if op.type == "const" and "val" in op.attributes:
            tensor = op.attributes["val"].type.tensorType
            if op.attributes["val"].type.WhichOneof("type") == "tensorType" and len(tensor.dimensions) > 0:
                name = dtype_name(tensor.dataType)
                precisions[name] += 1
                if name not in NOT_WEIGHTS:  # shapes, axes, pads and strides are int32 constants too
                    count = 1
                    for d in tensor.dimensions:
                        count *= int(d.constant.size) if d.WhichOneof("dimension") == "constant" else 1
                    parameters += count
    user = package.metadata
    return MLPackageInfo(
        Path(path), _package_size(Path(path)), len(ops), fn.opset, int(spec.specificationVersion),
        [_feature(f) for f in spec.description.input], [_feature(f) for f in spec.description.output],
        dict(Counter(op.type for op in ops).most_common()), dict(precisions.most_common()), parameters,
        dict(sorted(package.sa_deploy_strings.items())),
        {k: v for k, v in sorted(user.items()) if not k.startswith(PREFIX)})


def _operations(block):
    """Every operation of a MIL block, those of nested blocks (cond / while bodies) included."""
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _operations(inner)


def _feature(feature) -> dict:
    """A model description input/output as {name, dtype, shape}."""
    types = require("coremltools.proto", "coreml", "reading an .mlpackage").FeatureTypes_pb2
    t = feature.type
    kind = t.WhichOneof("Type")
    if kind == "multiArrayType":
        a = t.multiArrayType
        dtype = types.ArrayFeatureType.ArrayDataType.Name(a.dataType).lower() if a.dataType in \
            types.ArrayFeatureType.ArrayDataType.values() else f"dtype {a.dataType}"
        shape = [int(d) for d in a.shape]
        if a.WhichOneof("ShapeFlexibility") == "shapeRange":
            shape = [f"{r.lowerBound}..{r.upperBound if r.upperBound >= 0 else '?'}" for r in a.shapeRange.sizeRanges]
        return {"name": feature.name, "dtype": dtype, "shape": shape}
    if kind == "imageType":
        im = t.imageType
        space = types.ImageFeatureType.ColorSpace.Name(im.colorSpace) if im.colorSpace in \
            types.ImageFeatureType.ColorSpace.values() else str(im.colorSpace)
        return {"name": feature.name, "dtype": f"image {space}", "shape": [int(im.height), int(im.width)]}
    if kind == "dictionaryType":
        key = t.dictionaryType.WhichOneof("KeyType") or "?"
        return {"name": feature.name, "dtype": f"dict ({key.removesuffix('KeyType')} -> double)", "shape": []}
    return {"name": feature.name, "dtype": (kind or "?").removesuffix("Type"), "shape": []}


def _package_size(root: Path) -> int:
    """Bytes of the regular files in the package (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
