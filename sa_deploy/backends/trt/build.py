"""ONNX -> TensorRT engine with the TensorRT Python API (TensorRT 10 and 11), plus its JSON sidecar.

Precision is data: with a strongly typed network (TensorRT 11 always; TensorRT 10 with ``strongly_typed=True``)
it comes from the graph itself (Q/DQ for INT8, FP16 weights/casts for FP16), so the graph must already carry the
requested precision. TensorRT 10 without strong typing uses the FP16/INT8 builder flags; INT8 then needs explicit
Q/DQ in the graph, or a legacy calibrator when asked. The ONNX file is linted first (``backends.trt.lint``)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from sa_deploy.backends.lint_report import LintReport
from sa_deploy.backends.trt.calibrator import LEGACY_CALIBRATORS, make_calibrator
from sa_deploy.backends.trt.env import cuda_gpu, import_tensorrt, trt_major
from sa_deploy.backends.trt.lint import graph_precision, lint_model
from sa_deploy.backends.trt.sidecar import Profile, Sidecar, make_sidecar, owned_engine, owned_sidecar, write_engine
from sa_deploy.backends.trt.sidecar import sidecar_path as sidecar_file
from sa_deploy.errors import SADeployError
from sa_deploy.exporters.inspect import load_onnx
from sa_deploy.exporters.metadata import preprocess_from_metadata, read_onnx_metadata
from sa_deploy.util.atomic import any_regular_file, check_writable, write_bytes_atomic
from sa_deploy.util.hashing import bytes_sha256

PRECISIONS = ("fp16", "int8")
STRONG, FLAGS = "strongly-typed", "builder-flags"


@dataclass
class EngineBuild:
    path: Path
    sidecar_path: Path
    sidecar: Sidecar
    lint: LintReport | None
    size_bytes: int


@dataclass(frozen=True)
class TypingPlan:
    mode: str  # STRONG or FLAGS
    flags: tuple[str, ...]  # BuilderFlag names (FLAGS mode only)
    calibrator: str | None


def plan_typing(major: int, precision: str, graph: str, strongly_typed: bool | None = None,
                legacy_calibrator: str | None = None) -> TypingPlan:
    """How a TensorRT ``major`` builds ``precision`` from a graph that carries ``graph`` precision (see
    ``backends.trt.lint.graph_precision``). Raises SADeployError on combinations that would silently build something
    else than asked. Pure, so it is tested without TensorRT."""
    if precision not in PRECISIONS:
        raise SADeployError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if legacy_calibrator is not None:
        if legacy_calibrator not in LEGACY_CALIBRATORS:
            raise SADeployError(f"--legacy-calibrator must be one of {', '.join(LEGACY_CALIBRATORS)}")
        if major >= 11:
            raise SADeployError(f"TensorRT {major} removed implicit INT8 calibration: quantize the ONNX to Q/DQ "
                                "(sa-deploy quantize --flavour tensorrt) and build that")
        if precision != "int8" or strongly_typed:
            raise SADeployError("--legacy-calibrator needs --precision int8 and no strong typing")
        if graph != "fp32":
            raise SADeployError(f"--legacy-calibrator needs an fp32 graph; this one already carries {graph}")
        return TypingPlan(FLAGS, ("INT8", "FP16"), legacy_calibrator)
    if graph == "int8" and precision != "int8":
        raise SADeployError("the graph carries Q/DQ (INT8); build it with --precision int8")
    if major >= 11 or strongly_typed:
        if precision == "int8" and graph != "int8":
            raise SADeployError("a strongly typed INT8 build needs Q/DQ in the graph: quantize first "
                                "(sa-deploy quantize --flavour tensorrt)")
        if precision == "fp16" and graph != "fp16":
            raise SADeployError("a strongly typed FP16 build needs an FP16 graph: convert first (sa-deploy fp16)")
        return TypingPlan(STRONG, (), None)
    if precision == "int8" and graph != "int8":
        raise SADeployError("INT8 needs Q/DQ in the graph (sa-deploy quantize --flavour tensorrt) or, on "
                            "TensorRT 10, --legacy-calibrator entropy|minmax --calib DIR")
    # explicit Q/DQ still needs the INT8 flag on a weakly typed network; FP16 lets the rest run in half
    return TypingPlan(FLAGS, ("INT8", "FP16") if precision == "int8" else ("FP16",), None)


def batch_profile(model: onnx.ModelProto, min_batch: int, opt_batch: int, max_batch: int) -> Profile:
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise SADeployError(f"expected one image input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise SADeployError(f"input '{inputs[0].name}' must be (batch, C, H, W) with static C, H, W")
    return Profile(inputs[0].name, (dims[1].dim_value, dims[2].dim_value, dims[3].dim_value), min_batch,
                   opt_batch, max_batch)


def _parse_errors(parser: Any, model: onnx.ModelProto) -> str:
    """Parser errors with the ONNX node index, name and op (from the error, else from our copy of the graph)."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        idx = err.node()
        node = model.graph.node[idx] if 0 <= idx < len(model.graph.node) else None
        name = getattr(err, "node_name", lambda: "")() or (node.name if node else "")
        op = getattr(err, "node_operator", lambda: "")() or (node.op_type if node else "")
        where = f"node {idx} '{name}' ({op})" if idx >= 0 else "graph"
        lines.append(f"{where}: {err.desc()}")
    return "; ".join(lines) or "no error details"


def build_engine(onnx_path: str | Path, out: str | Path | None = None, precision: str = "fp16",
                 min_batch: int = 1, opt_batch: int = 8, max_batch: int = 32, workspace_mb: int | None = None,
                 timing_cache: str | Path | None = None, opt_level: int | None = None,
                 strongly_typed: bool | None = None, legacy_calibrator: str | None = None,
                 calib: str | Path | None = None, calib_num: int = 512, calib_batch: int = 8,
                 lint: bool = True, device: int = 0) -> EngineBuild:
    """Build ``onnx_path`` into a TensorRT engine at ``out`` (default: next to it, ``.engine``) with a batch
    profile min/opt/max, and write ``<engine>.json``. Everything checkable without TensorRT is checked first."""
    onnx_path = Path(onnx_path)
    out = Path(out) if out else onnx_path.with_suffix(".engine")
    if opt_level is not None and not 0 <= opt_level <= 5:
        raise SADeployError(f"--opt-level must be 0..5, got {opt_level}")
    if workspace_mb is not None and workspace_mb <= 0:
        raise SADeployError(f"--workspace-mb must be positive, got {workspace_mb}")
    if (calib is None) != (legacy_calibrator is None):
        raise SADeployError("--calib and --legacy-calibrator go together (explicit Q/DQ needs neither)")
    check_writable(out, owned_engine)
    check_writable(sidecar_file(out), owned_sidecar)
    if timing_cache is not None:
        check_writable(timing_cache, any_regular_file)
    model = load_onnx(onnx_path)
    data = onnx_path.read_bytes()
    report = None
    if lint:
        report = lint_model(model, str(onnx_path), max_batch)
        if not report.passed:
            first = report.errors[0].describe()
            raise SADeployError(f"{onnx_path.name} fails the TensorRT lint with {len(report.errors)} error(s), "
                                f"first {first}; see `sa-deploy lint --target tensorrt {onnx_path}` (--no-lint "
                                "skips)")
    profile = batch_profile(model, min_batch, opt_batch, max_batch)
    meta = read_onnx_metadata(model)
    trt = import_tensorrt()
    plan = plan_typing(trt_major(trt.__version__), precision, graph_precision(model), strongly_typed,
                       legacy_calibrator)
    gpu = cuda_gpu(device)

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 keeps STRONGLY_TYPED only for compatibility (always strongly typed); tolerate its removal
    strong_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strong_flag) if plan.mode == STRONG and strong_flag is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise SADeployError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {_parse_errors(parser, model)}")

    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if opt_level is not None:
        config.builder_optimization_level = opt_level
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.input_name, *profile.shapes())
    config.add_optimization_profile(trt_profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    options: dict[str, Any] = {"workspace_mb": workspace_mb, "opt_level": opt_level, "flags": list(plan.flags),
                               "timing_cache": str(cache_path) if cache_path else None, "lint": lint}
    calibrator = None
    if plan.calibrator:
        from sa_deploy.data.resolve import open_images

        cfg = preprocess_from_metadata(meta)
        if cfg is None:
            raise SADeployError(f"{onnx_path.name} has no preprocessing config in its metadata; calibration "
                                "needs it (export it with sa-deploy export)")
        source = open_images(calib, cfg, num=calib_num, split="calib")
        calib_cache = out.with_name(f"{out.stem}.{plan.calibrator}.{source.fingerprint()}.calib")
        calibrator = make_calibrator(trt, plan.calibrator, source, calib_batch, calib_cache, device)
        config.int8_calibrator = calibrator
        calib_profile = builder.create_optimization_profile()  # calibrate at the calibration batch size
        calib_profile.set_shape(profile.input_name, *([(calib_batch, *profile.chw)] * 3))
        config.set_calibration_profile(calib_profile)
        options.update(calibrator=plan.calibrator, calib=str(calib), calib_cache=str(calib_cache),
                       calib_fingerprint=source.fingerprint())

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SADeployError(f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log "
                            "above; try a larger --workspace-mb)")
    engine_bytes = bytes(memoryview(serialized))
    seconds = time.perf_counter() - start
    if calibrator is not None:
        options["calib_batches"] = calibrator.batches_used
    if cache_path:
        # the user named this file to be read and updated
        write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())),
                           owned=any_regular_file)

    sidecar = make_sidecar(deploy_config=meta, trt_version=trt.__version__, gpu=gpu.to_dict(), precision=precision,
                           typing=plan.mode, profile=profile, onnx_sha256=bytes_sha256(data),
                           onnx_path=str(onnx_path), engine_sha256=bytes_sha256(engine_bytes),
                           build_seconds=seconds, options=options)
    side = write_engine(out, engine_bytes, sidecar)
    return EngineBuild(out, side, sidecar, report, len(engine_bytes))
