"""An ONNX file's preprocessing, decided by the one resolver (models.preprocess_resolver): this module reads what
the file says about itself (its one image input, checked first; its fixed H/W and class count; its
``sa_deploy.preprocess`` metadata, through exporters.metadata) and hands it to ``resolve``. The resolver's names
are re-exported here, where the CLI and the API have always imported them from."""
from __future__ import annotations

import onnx

from sa_deploy.exporters.inspect import image_input
from sa_deploy.exporters.metadata import onnx_metadata
from sa_deploy.models.preprocess_resolver import (  # noqa: F401  (re-exported)
    FLAGS,
    PreprocessOverrides,
    ResolvedPreprocess,
    apply_overrides,
    check_input_size_flag,
    resolve,
)
from sa_deploy.models.preprocessing import PreprocessConfig


def output_classes(model: onnx.ModelProto) -> int | None:
    """The fixed class count of a (N, classes) first output, or None when it is not fixed."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return dims[-1].dim_value if len(dims) == 2 and dims[-1].HasField("dim_value") else None


def resolve_preprocess(model: onnx.ModelProto, name: str, overrides: PreprocessOverrides | dict | None = None,
                       required: bool = True, fallback: tuple[PreprocessConfig, str] | None = None
                       ) -> ResolvedPreprocess:
    """The preprocessing of ``model`` (file ``name``), its one image input checked first (a single float (N, 3, S, S)
    input: one-line errors otherwise). Metadata (else ``fallback``: a config and where it came from) with the given
    ``overrides`` replacing its fields; without either, the overrides alone (mean and std required). ``required``
    False: no metadata, no fallback and no overrides -> ``config`` None instead of an error."""
    ov = PreprocessOverrides.of(overrides)
    _, fixed = image_input(model, name)
    check_input_size_flag(ov.input_size, fixed, name)
    base = onnx_metadata(model, name).preprocess
    return resolve(base, "metadata", ov, name, fixed=fixed, classes=output_classes(model), required=required,
                   fallback=fallback, check_size=lambda size: image_input(model, name, size))
