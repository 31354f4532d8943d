"""INT8 on every CPU: the kernel path is known, the static int16-saturation check, the numpy emulation of both x86
kernel paths, OpenVINO's real AVX2 int8 kernels on any x86 host (oneDNN's ISA cap), and the diagnosis text.

The tiny model: x (N,4,H,W) in [0,1] -> Q u8 (scale 1/255) -> DQ -> 1x1 Conv with int8 weights, per-channel:
channel 0 all q=127 (real 1.02), channel 1 all q=``w1`` (real 1.0) -> Q/DQ -> GlobalAveragePool -> Flatten.
Inputs are equal across channels, so every pairing of the kernels' K dimension gives the same sums: with
activations above 129, channel 0's pairs (254 * a) saturate int16 and its logit falls below channel 1's."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sa_deploy.backends.cpu_lint import int8_node_bounds, lint_cpu_overflow, worst_pair_sums
from sa_deploy.calibration.kernel_emulation import QdqEmulator, pair_sums
from sa_deploy.cli import main
from sa_deploy.util.int8_kernels import (
    INT16_PAIRS,
    INT32,
    Int8Path,
    arm_int8_isa,
    cpu_int8_path,
    onednn_int8_path,
    x86_int8_isa,
)
from sa_deploy.validate.int8_numerics import Int8Numerics, diagnose

OUT_SCALE = 4.2 / 255


def tiny_qdq(path: Path, w1: int = 64, w0: int = 127) -> Path:
    """The module docstring's model (opset 17), saved to ``path``."""
    w = np.zeros((2, 4, 1, 1), np.int8)
    w[0], w[1] = w0, w1
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
             numpy_helper.from_array(w, "w_q"),
             numpy_helper.from_array(np.array([1.02 / w0, 1.0 / w1], np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(2, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(OUT_SCALE, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zp"], ["yq"], name="q_y"),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["yd"], name="dq_y"),
             helper.make_node("GlobalAveragePool", ["yd"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["logits"], name="flatten")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def inputs(n: int = 40, seed: int = 0) -> np.ndarray:
    """Half the images bright (activations 200..255: channel 0 saturates), half dark (< 120: nothing does)."""
    rng = np.random.default_rng(seed)
    level = np.concatenate([rng.uniform(200, 255, n // 2), rng.uniform(10, 120, n - n // 2)]) / 255
    x = level[:, None, None, None] * rng.uniform(0.97, 1.0, (n, 1, 4, 4))
    return np.repeat(x, 4, axis=1).astype(np.float32)


def ort_logits(path: Path, x: np.ndarray, emulate: bool) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if emulate:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def top1(logits: np.ndarray) -> float:
    return float(100 * (logits.argmax(1) == 0).mean())  # the float model says class 0 for every image


# --- the kernel path -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,accumulation", [
    ({"avx2", "fma"}, INT16_PAIRS), ({"avx2", "avx512f", "avx512bw"}, INT16_PAIRS),
    ({"avx2", "avx_vnni"}, INT32), ({"avx2", "avx512bw", "avx512_vnni"}, INT32),
    ({"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, INT32), (set(), INT16_PAIRS)])
def test_x86_kernel_path_from_flags(flags, accumulation):
    assert x86_int8_isa(flags)[0] == accumulation
    path = cpu_int8_path(flags=flags, machine="x86_64")
    assert path.accumulation == accumulation and path.saturates == (accumulation == INT16_PAIRS)
    assert ("saturate" in path.line()) == path.saturates


def test_arm_never_saturates():
    for flags in ({"asimd"}, {"asimd", "asimddp"}, {"asimd", "asimddp", "i8mm"}):
        assert arm_int8_isa(flags)[0] == INT32
        assert not cpu_int8_path(flags=flags, machine="aarch64").saturates


def test_openvino_primitive_types_name_the_path():
    assert onednn_int8_path("openvino", ["jit_avx2_I8", "jit_avx2_1x1_I8", "undef_I8"]).saturates
    assert onednn_int8_path("openvino", ["brgconv_avx512_core_vnni_I8"]).accumulation == INT32
    assert onednn_int8_path("openvino", ["brgconv_avx512_amx_1x1_I8", "undef"]).accumulation == INT32
    assert onednn_int8_path("openvino", ["brgconv_avx512_core_I8"]).saturates  # AVX-512BW without VNNI
    assert onednn_int8_path("openvino", ["undef", "ref_any"]) is None


def test_reports_record_this_machines_path():
    from sa_deploy.util.machine import machine_info

    assert machine_info()["int8_kernels"] == cpu_int8_path().line()


# --- the numpy emulation against real runtimes -------------------------------------------------------------------

def test_pair_sums_saturate_only_on_the_int16_path():
    a = np.array([[255, 255, 10, 10]], np.uint8)
    w = np.array([[127], [127], [127], [127]], np.int8)
    assert pair_sums(a, w, INT32)[0, 0] == 127 * 530
    assert pair_sums(a, w, INT16_PAIRS)[0, 0] == 32767 + 127 * 20


def test_int32_emulation_matches_onnxruntime_float_emulation(tmp_path):
    model = tiny_qdq(tmp_path / "tiny.onnx")
    x = inputs()
    exact = QdqEmulator(onnx.load(str(model)), INT32).run(x)
    assert np.abs(exact - ort_logits(model, x, emulate=True)).max() <= OUT_SCALE + 1e-6
    pairs = QdqEmulator(onnx.load(str(model)), INT16_PAIRS).run(x)
    dark = slice(20, None)
    np.testing.assert_allclose(pairs[dark], exact[dark], atol=1e-6)  # no saturation below a = 129
    assert top1(exact) == 100.0 and top1(pairs) <= 50.0  # every bright image flips to class 1


def test_onnxruntime_kernels_compute_the_path_sa_deploy_reports(tmp_path):
    """The detected path is not a guess: this host's onnxruntime int8 kernels give the numbers of the emulation of
    the path that cpu_int8_path() names (int32 on VNNI/AMX/Arm, int16 pairs on AVX2/AVX-512BW)."""
    model = tiny_qdq(tmp_path / "tiny.onnx")
    x = inputs()
    kernels = ort_logits(model, x, emulate=False)
    expected = QdqEmulator(onnx.load(str(model)), cpu_int8_path().accumulation).run(x)
    other = QdqEmulator(onnx.load(str(model)), INT32 if cpu_int8_path().saturates else INT16_PAIRS).run(x)
    assert np.abs(kernels - expected).max() <= 2 * OUT_SCALE + 1e-6
    assert np.abs(kernels - other).max() > 0.5


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's AVX2 ISA cap is x86 only")
def test_openvino_avx2_kernels_saturate_like_the_emulation(tmp_path):
    """OpenVINO with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA, read at start-up: a subprocess) runs the real
    non-VNNI int8 kernels on any x86 host: sa-deploy reads that path from the compiled model, and the outputs are
    the int16-pair emulation's."""
    pytest.importorskip("openvino")
    model = tiny_qdq(tmp_path / "tiny.onnx")
    x = inputs()
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import json, numpy as np
        from sa_deploy.backends.openvino.runner import OpenVINORunner
        with OpenVINORunner({str(model)!r}, threads=1) as r:
            out = r.infer(np.load({str(tmp_path / 'x.npy')!r}))
            path = r.int8_path()
        np.save({str(tmp_path / 'ov.npy')!r}, out)
        print(json.dumps(path.to_dict() if path else None))
    """)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path = json.loads(done.stdout.strip().splitlines()[-1])
    if path is None:
        pytest.skip("OpenVINO ran this graph without int8 kernels")
    assert path["accumulation"] == INT16_PAIRS and "ONEDNN_MAX_CPU_ISA=AVX2" in path["source"]
    ov = np.load(tmp_path / "ov.npy")
    pairs = QdqEmulator(onnx.load(str(model)), INT16_PAIRS).run(x)
    assert np.abs(ov - pairs).max() <= 2 * OUT_SCALE + 1e-6
    assert top1(ov) <= 50.0


# --- the static check --------------------------------------------------------------------------------------------

def test_worst_pair_bound():
    rows = np.array([[127, 127, -3, 0], [64, 64, -64, -64], [127, -127, 1, -1], [65, 64, 0, 0]], np.int8)
    assert worst_pair_sums(rows).tolist() == [64770, 32640, 255 * 128, 255 * 129]


def test_static_check_flags_a_saturating_graph_and_passes_a_safe_one(tmp_path):
    risky = lint_cpu_overflow(tiny_qdq(tmp_path / "risky.onnx", w0=127))
    assert not risky.passed and risky.findings[0].rule == "int16-saturation"
    assert risky.findings[0].nodes == (("conv", "Conv"),)
    safe = lint_cpu_overflow(tiny_qdq(tmp_path / "safe.onnx", w0=64))
    assert safe.passed and safe.checked == {"int8 nodes": 1, "overflow-safe": 1}
    # the static "cannot saturate" holds at run time: the int16 path equals the int32 path on the worst inputs
    model = onnx.load(str(tmp_path / "safe.onnx"))
    x = np.ones((2, 4, 4, 4), np.float32)
    np.testing.assert_array_equal(QdqEmulator(model, INT16_PAIRS).run(x), QdqEmulator(model, INT32).run(x))


def test_lint_target_cpu_through_the_cli(tmp_path, capsys):
    assert main(["lint", "--target", "cpu", str(tiny_qdq(tmp_path / "risky.onnx"))]) == 1
    out = capsys.readouterr().out
    assert "int16-saturation" in out and "--weight-bits 7" in out
    assert main(["lint", "--target", "cpu", str(tiny_qdq(tmp_path / "safe.onnx", w0=64))]) == 0


def test_float_weights_are_not_int8_nodes(tmp_path):
    model = onnx.load(str(tiny_qdq(tmp_path / "t.onnx")))
    assert [b.name for b in int8_node_bounds(model)] == ["conv"]
    model.graph.node[3].input[1] = "w_float"  # the Conv reads a float weight: no int8 kernel
    model.graph.initializer.append(numpy_helper.from_array(np.ones((2, 4, 1, 1), np.float32), "w_float"))
    assert int8_node_bounds(model) == []


# --- the diagnosis -----------------------------------------------------------------------------------------------

def _numerics(kernel_drop: float, emulated_drop: float, accumulation: str, judged_by: str = "kernels",
              bits: int | None = 8) -> Int8Numerics:
    path = Int8Path("onnxruntime", accumulation, "AVX2 without VNNI (vpmaddubsw)", "test").to_dict()
    judged, twin = (path, None) if judged_by == "kernels" else (None, path)
    return Int8Numerics(judged_by, judged, twin, 100 - kernel_drop, kernel_drop, 0.9, 100 - emulated_drop,
                        emulated_drop, 0.999, bits, "cpu")


def test_diagnosis_of_the_emulated_kernel_gap(tmp_path):
    """The gap between the two emulated paths on the tiny model, through diagnose(): the one line names the
    kernels, the saturation, the emulated drop and the fix."""
    model = onnx.load(str(tiny_qdq(tmp_path / "tiny.onnx")))
    x = inputs()
    kernel_drop = 100 - top1(QdqEmulator(model, INT16_PAIRS).run(x))
    emulated_drop = 100 - top1(QdqEmulator(model, INT32).run(x))
    text = diagnose(_numerics(kernel_drop, emulated_drop, INT16_PAIRS), images=len(x), max_drop=1.0)
    assert text == (f"the loss is this CPU's int8 kernels (AVX2 without VNNI (vpmaddubsw): int16 pair saturation), "
                    f"not calibration: emulated drop {emulated_drop:.2f} vs {kernel_drop:.2f}; re-quantize with "
                    "--weight-bits 7 (overflow-safe on every CPU; `sa-deploy lint --target cpu` names the nodes)")


def test_diagnosis_other_cases():
    assert diagnose(_numerics(0.2, 0.1, INT32), 1000, 1.0) is None  # within noise
    trt = diagnose(_numerics(4.0, 0.1, INT16_PAIRS, judged_by="emulation"), 1000, 1.0)
    assert trt.startswith("judged by int32 Q/DQ emulation") and "not what TensorRT computes" in trt
    runtime = diagnose(_numerics(3.0, 0.1, INT32), 1000, 1.0)
    assert runtime.startswith("the loss is the runtime's int8 execution")
    calib = diagnose(_numerics(2.1, 2.0, INT32), 1000, 1.0)
    assert calib.startswith("the loss is in quantization itself")
    assert diagnose(_numerics(0.5, 0.0, INT16_PAIRS), 100, 1.0) is None  # 3 images on 100 are noise


# --- through the CLI on the embedded model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """sa_resnet_cifar's fold export and its INT8 files (64 embedded calibration images): cpu (default bits),
    cpu with --weight-bits 8, tensorrt."""
    out = tmp_path_factory.mktemp("int8_cli")
    assert main(["export", "--model", "sa_resnet_cifar", "--pretrained", "--out", f"{out}/"]) == 0
    fp32 = out / "sa_resnet_cifar_fold.onnx"
    files = {}
    for key, extra in (("cpu", ["--flavour", "cpu"]), ("cpu8", ["--flavour", "cpu", "--weight-bits", "8"]),
                       ("tensorrt", [])):
        files[key] = out / f"{key}.onnx"
        assert main(["quantize", str(fp32), "--calib", "embedded", "--num", "64", "--out", str(files[key]),
                     "--cache-dir", str(out / "cache"), *extra]) == 0
    return files


def test_quantize_records_weight_bits_and_lint_agrees(quantized, capsys):
    from sa_deploy.exporters.metadata import read_onnx_metadata

    meta = {k: read_onnx_metadata(onnx.load(str(p))) for k, p in quantized.items()}
    assert meta["cpu"]["int8_weight_bits"] == "7" and meta["cpu"]["int16_overflow_safe"] == "true"
    assert meta["cpu8"]["int8_weight_bits"] == "8" and meta["tensorrt"]["int8_weight_bits"] == "8"
    w = [numpy_helper.to_array(i) for i in onnx.load(str(quantized["cpu"])).graph.initializer]
    assert max(int(np.abs(a.astype(np.int16)).max()) for a in w if a.dtype == np.int8 and a.ndim == 4) == 64
    capsys.readouterr()
    assert main(["lint", "--target", "cpu", str(quantized["cpu"])]) == 0  # the overflow-safe file passes
    assert main(["lint", "--target", "cpu", "--json", str(quantized["cpu8"])]) == 1  # the 8-bit one is flagged
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{"):])
    assert report["target"] == "cpu" and report["findings"][0]["rule"] == "int16-saturation"


def test_validate_judges_each_file_by_its_target(quantized, tmp_path, capsys):
    out = tmp_path / "v.json"
    rc = main(["validate", "--model", "sa_resnet_cifar", "--pretrained", "--data", "embedded", "--num", "200",
               "--no-progress", "--json", str(out), "--artifacts", str(quantized["cpu"]), str(quantized["tensorrt"])])
    printed = capsys.readouterr().out
    assert rc == 0
    written = json.loads(out.read_text())
    assert written["machine"]["int8_kernels"] == cpu_int8_path().line()  # the JSON says which kernels judged it
    assert f"int8 kernels here: {cpu_int8_path().line()}" in printed
    results = {Path(r["name"]).stem: r for r in written["results"]}
    cpu, trt = results["cpu"]["details"], results["tensorrt"]["details"]
    assert cpu["int8"]["judged_by"] == "kernels" and cpu["int8"]["path"] == cpu_int8_path().to_dict()
    assert cpu["runner"] == "onnxruntime" and cpu["int8"]["twin_path"]["accumulation"] == "float-emulation"
    assert trt["int8"]["judged_by"] == "emulation" and trt["runner"] == "onnxruntime (Q/DQ emulated)"
    assert trt["int8"]["twin_path"] == cpu_int8_path().to_dict()
    for r in (cpu, trt):
        assert r["int8"]["kernel_drop"] is not None and r["int8"]["emulated_drop"] is not None
    assert "cpu.onnx: judged by onnxruntime's kernels" in printed and "tensorrt.onnx: judged by int32 Q/DQ" in printed


def test_emulator_refuses_what_it_does_not_compute(tmp_path):
    from sa_deploy.calibration.kernel_emulation import UnsupportedGraphError

    model = onnx.load(str(tiny_qdq(tmp_path / "t.onnx")))
    model.graph.node[6].op_type = "GlobalMaxPool"  # not in the emulated op set: refused, not approximated
    with pytest.raises(UnsupportedGraphError, match="op GlobalMaxPool: not one of the emulated ops"):
        QdqEmulator(model, INT32).run(inputs(2))
