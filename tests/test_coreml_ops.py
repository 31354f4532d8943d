"""The reference MIL executor's kernels, each checked against an independent implementation (torch / numpy /
coremltools' own bit packer). No conversion here, so these run in seconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sa_deploy.backends.coreml.mil_ops import KERNELS
from sa_deploy.backends.coreml.mil_reader import unpack_bits

rng = np.random.default_rng(0)


def _randn(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("groups,stride,pad,dilation,k", [
    (1, 1, (1, 1, 1, 1), 1, 3), (1, 2, (1, 1, 1, 1), 1, 3), (4, 1, (0, 2, 1, 0), 1, 3), (8, 2, (1, 1, 1, 1), 1, 3),
    (1, 1, (0, 0, 0, 0), 1, 1), (1, 2, (0, 0, 0, 0), 1, 1), (2, 1, (2, 2, 2, 2), 2, 3), (1, 1, (3, 3, 3, 3), 1, 7)])
def test_conv_matches_torch(groups, stride, pad, dilation, k):
    x, w, b = _randn(2, 8, 11, 9), _randn(16, 8 // groups, k, k), _randn(16)
    got = KERNELS["conv"]({"x": x, "weight": w, "bias": b, "groups": np.int32(groups), "pad_type": "custom",
                           "pad": np.array(pad), "strides": np.array([stride] * 2),
                           "dilations": np.array([dilation] * 2)})
    xp = F.pad(torch.from_numpy(x), (pad[2], pad[3], pad[0], pad[1]))
    want = F.conv2d(xp, torch.from_numpy(w), torch.from_numpy(b), stride, 0, dilation, groups).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pad_type", ["same", "valid"])
def test_conv_pad_types(pad_type):
    x, w = _randn(1, 3, 10, 10), _randn(4, 3, 3, 3)
    got = KERNELS["conv"]({"x": x, "weight": w, "pad_type": pad_type, "strides": np.array([1, 1])})
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1 if pad_type == "same" else 0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_pooling_matches_torch():
    x = _randn(2, 3, 9, 9)
    args = {"x": x, "kernel_sizes": np.array([3, 3]), "strides": np.array([2, 2]), "pad_type": "custom",
            "pad": np.array([1, 1, 1, 1])}
    t = torch.from_numpy(x)
    np.testing.assert_allclose(KERNELS["max_pool"](args), F.max_pool2d(t, 3, 2, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(KERNELS["avg_pool"]({**args, "exclude_padding_from_average": np.bool_(True)}),
                               F.avg_pool2d(t, 3, 2, 1, count_include_pad=False).numpy(), atol=1e-5)
    np.testing.assert_allclose(KERNELS["avg_pool"]({**args, "exclude_padding_from_average": np.bool_(False)}),
                               F.avg_pool2d(t, 3, 2, 1, count_include_pad=True).numpy(), atol=1e-5)


def test_norms_and_reductions_match_torch():
    x, g, b = _randn(2, 6, 5, 7) * 3 + 1, _randn(6), _randn(6)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(KERNELS["instance_norm"]({"x": x, "gamma": g, "beta": b, "epsilon": np.float32(1e-5)}),
                               F.instance_norm(t, weight=torch.from_numpy(g), bias=torch.from_numpy(b)).numpy(),
                               atol=1e-5)
    mean, var = _randn(6), np.abs(_randn(6)) + 0.5
    np.testing.assert_allclose(
        KERNELS["batch_norm"]({"x": x, "mean": mean, "variance": var, "gamma": g, "beta": b, "epsilon": 1e-5}),
        F.batch_norm(t, *map(torch.from_numpy, (mean, var, g, b)), eps=1e-5).numpy(), atol=1e-5)
    np.testing.assert_allclose(KERNELS["reduce_mean"]({"x": x, "axes": np.array([2, 3]), "keep_dims": True}),
                               t.mean((2, 3), keepdim=True).numpy(), atol=1e-6)
    np.testing.assert_allclose(KERNELS["sigmoid"]({"x": x * 30}), torch.sigmoid(t * 30).numpy(), atol=1e-6)
    np.testing.assert_allclose(KERNELS["clip"]({"x": x, "alpha": 0.0, "beta": 6.0}), F.relu6(t).numpy())
    np.testing.assert_allclose(KERNELS["linear"]({"x": x[:, :, 0, 0], "weight": _randn(4, 6)[..., :6],
                                                  "bias": np.zeros(4, np.float32)}).shape, (2, 4))


def test_shape_ops_give_the_channel_shuffle():
    x = _randn(1, 8, 3, 3)
    y = KERNELS["reshape"]({"x": x, "shape": np.array([1, 2, 4, 9])})
    y = KERNELS["transpose"]({"x": y, "perm": np.array([0, 2, 1, 3])})
    y = KERNELS["reshape"]({"x": y, "shape": np.array([1, 8, 3, 3])})
    np.testing.assert_array_equal(y, torch.nn.ChannelShuffle(2)(torch.from_numpy(x)).numpy())
    parts = KERNELS["split"]({"x": x, "axis": np.int32(1), "num_splits": np.int32(2)})
    np.testing.assert_array_equal(KERNELS["concat"]({"values": list(parts), "axis": np.int32(1)}), x)
    inter = KERNELS["concat"]({"values": [x[:, :4], x[:, 4:]], "axis": np.int32(1), "interleave": True})
    np.testing.assert_array_equal(inter, torch.nn.ChannelShuffle(2)(torch.from_numpy(x)).numpy())


def test_quantize_dequantize_match_torch():
    x = _randn(2, 4, 3, 3) * 2
    q = KERNELS["quantize"]({"input": x, "scale": np.float32(0.02), "output_dtype": "int8"})
    want = torch.quantize_per_tensor(torch.from_numpy(x), 0.02, 0, torch.qint8)
    np.testing.assert_array_equal(q, want.int_repr().numpy())
    np.testing.assert_allclose(KERNELS["dequantize"]({"input": q, "scale": np.float32(0.02)}),
                               want.dequantize().numpy(), atol=1e-6)
    scales, zps = np.array([0.01, 0.02, 0.03, 0.05], np.float32), np.array([120, 128, 130, 100], np.uint8)
    qu = KERNELS["quantize"]({"input": x, "scale": scales, "zero_point": zps, "axis": np.int32(1),
                              "output_dtype": "uint8"})
    want_u = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales).double(),
                                        torch.from_numpy(zps.astype(np.int64)), 1, torch.quint8)
    np.testing.assert_array_equal(qu, want_u.int_repr().numpy())
    deq = KERNELS["constexpr_affine_dequantize"]({"quantized_data": qu, "scale": scales, "zero_point": zps,
                                                  "axis": np.int32(1)})
    np.testing.assert_allclose(deq, want_u.dequantize().numpy(), atol=1e-6)


def test_blockwise_shift_scale():
    data = rng.integers(-128, 127, (4, 6), dtype=np.int8)
    scale, offset = np.abs(_randn(4, 2)), rng.integers(-3, 3, (4, 2)).astype(np.int8)
    got = KERNELS["constexpr_blockwise_shift_scale"]({"data": data, "scale": scale, "offset": offset})
    want = (data.astype(np.float32) - np.repeat(offset, 3, axis=1)) * np.repeat(scale, 3, axis=1)
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6])
def test_unpack_bits_inverts_coremltools_packing(nbits):
    from coremltools.optimize import _utils as ct_utils

    values = rng.integers(0, 2**nbits, 37).astype(np.uint8)
    packed = ct_utils.pack_elements_into_bits(values, nbits)
    np.testing.assert_array_equal(unpack_bits(packed, nbits, len(values)), values)


def test_lut_to_dense_both_forms():
    from coremltools.optimize import _utils as ct_utils

    lut = _randn(16)
    idx = rng.integers(0, 16, (8, 3)).astype(np.uint8)
    ios16 = KERNELS["constexpr_lut_to_dense"]({"lut": lut, "indices": ct_utils.pack_elements_into_bits(idx, 4),
                                               "shape": np.array([8, 3], np.uint32)})
    np.testing.assert_array_equal(ios16, lut[idx])
    # iOS18: one table per block of 4 rows
    luts = _randn(2, 1, 16, 1)
    ios18 = KERNELS["constexpr_lut_to_dense"]({"lut": luts, "indices": idx})
    np.testing.assert_array_equal(ios18, np.concatenate([luts[0, 0, :, 0][idx[:4]], luts[1, 0, :, 0][idx[4:]]]))


# ---- the vectorized conv, against a float64 reference --------------------------------------------------------------
CONV_CASES = [  # (cin, cout, groups, kernel, strides, dilations, pad_type, pad)
    (3, 16, 1, (3, 3), (1, 1), (1, 1), "custom", (1, 1, 1, 1)),
    (8, 16, 1, (3, 3), (2, 2), (1, 1), "custom", (1, 1, 1, 1)),
    (8, 12, 4, (3, 3), (1, 2), (1, 1), "custom", (0, 2, 1, 0)),
    (8, 8, 8, (3, 3), (1, 1), (1, 1), "custom", (1, 1, 1, 1)),  # depthwise
    (8, 16, 8, (3, 3), (2, 2), (1, 1), "same", None),  # depthwise, channel multiplier 2: the grouped path
    (6, 6, 6, (5, 3), (2, 1), (2, 1), "same_lower", None),  # depthwise, non-square, dilated
    (8, 16, 2, (3, 3), (1, 1), (2, 3), "custom", (2, 2, 3, 3)),
    (16, 32, 1, (1, 1), (1, 1), (1, 1), "valid", None),
    (16, 32, 1, (1, 1), (2, 2), (1, 1), "valid", None),
    (16, 32, 4, (1, 1), (1, 1), (1, 1), "custom", (1, 0, 0, 1)),
    (4, 8, 1, (7, 7), (3, 3), (1, 1), "same", None),
    (4, 8, 1, (3, 2), (1, 1), (1, 1), "valid", None),
]


@pytest.mark.parametrize("cin,cout,groups,ksize,strides,dilations,pad_type,pad", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_float64_reference(cin, cout, groups, ksize, strides, dilations, pad_type, pad, bias):
    """im2col + one BLAS matmul per group (a tap loop for depthwise) vs torch's conv2d in float64, within the
    worst-case float32 summation error of each output: (K + 2) * 2**-24 * sum |w x| (+ |b|), K terms."""
    from sa_deploy.backends.coreml.mil_ops import bind

    x, w = _randn(2, cin, 13, 11), _randn(cout, cin // groups, *ksize)
    b = _randn(cout) if bias else None
    args = {"weight": w, "groups": np.int32(groups), "pad_type": pad_type, "strides": np.array(strides),
            "dilations": np.array(dilations), **({"pad": np.array(pad)} if pad is not None else {}),
            **({"bias": b} if bias else {})}
    got = KERNELS["conv"]({"x": x, **args})
    bound = bind("conv", args, frozenset({"x"}))({"x": x})  # weights prepared once, as the executor runs it
    np.testing.assert_array_equal(bound, got)

    def reference(xs: np.ndarray, ws: np.ndarray, bs: np.ndarray | None) -> np.ndarray:
        t = torch.from_numpy(xs.astype(np.float64))
        if pad_type == "custom":
            t = F.pad(t, (pad[2], pad[3], pad[0], pad[1]))
        if pad_type in ("same", "same_lower"):  # explicit pads, as MIL defines them (the odd one after / before)
            pads = []
            for size, k, s, d in zip(xs.shape[2:], ksize, strides, dilations):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pads.append((small, big) if pad_type == "same" else (big, small))
            t = F.pad(t, (*pads[1], *pads[0]))
        bt = torch.from_numpy(bs.astype(np.float64)) if bs is not None else None
        return F.conv2d(t, torch.from_numpy(ws.astype(np.float64)), bt, strides, 0, dilations, groups).numpy()

    want = reference(x, w, b)
    magnitude = reference(np.abs(x), np.abs(w), np.abs(b) if bias else None)
    terms = (cin // groups) * ksize[0] * ksize[1]
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.all(np.abs(got - want) <= (terms + 2) * 2.0 ** -24 * magnitude + 1e-30), np.abs(got - want).max()


# ---- fp16 storage: the fast rounding is numpy's cast, bit for bit --------------------------------------------------
def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.all((got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_round_to_fp16_is_numpys_cast():
    from sa_deploy.backends.coreml.mil_ops import round_to_fp16

    # every float32 exponent up to fp16's overflow (float32 subnormals included), each with the 13 dropped bits set
    # to a tie, just either side of one, zero and all ones: every rounding case of every binade, both signs
    heads = np.arange(0, (0x47800000 >> 13) + 1, dtype=np.uint32) << 13
    cases = [(heads | low).view(np.float32) for low in (0x1000, 0x0FFF, 0x1001, 0, 0x1FFF, 1)]
    cases += [-c for c in cases]
    fp16_values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    random_bits = np.random.default_rng(3).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    cases += [fp16_values, random_bits.view(np.float32),
              np.array([65504, 65519.996, 65520, -65520, 7e4, np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40],
                       np.float32), np.zeros(0, np.float32)]
    for x in cases:
        assert _same_bits(round_to_fp16(x), x.astype(np.float16).astype(np.float32))
    activations = _randn(1, 64, 32, 32) * 4  # a relu output: many zeros, a few values in fp16's subnormal range
    for x in (activations, np.maximum(activations, 0), activations * 1e-4):
        assert _same_bits(round_to_fp16(x), x.astype(np.float16).astype(np.float32))


def test_rewritten_kernels_compute_as_before():
    """sigmoid, instance_norm, quantize and dequantize were rewritten in place (fewer temporaries): bit for bit the
    formulas they had."""
    x = (_randn(2, 6, 9, 7) * 8).astype(np.float16).astype(np.float32)
    e = np.exp(-np.abs(x))
    np.testing.assert_array_equal(KERNELS["sigmoid"]({"x": x}), np.where(x >= 0, 1 / (1 + e), e / (1 + e)))
    g, b = _randn(6), _randn(6)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(2, 3), keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=(2, 3), keepdims=True)
    want = ((x64 - mean) / np.sqrt(var + 1e-5) * g.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)).astype(np.float32)
    got = KERNELS["instance_norm"]({"x": x, "gamma": g, "beta": b, "epsilon": np.float32(1e-5)})
    np.testing.assert_array_equal(got, want)
    for scale, zp, dtype in ((np.float32(0.05), None, "int8"), (np.float32(0.03), np.uint8(128), "uint8")):
        args = {"input": x, "scale": scale, "output_dtype": dtype, **({"zero_point": zp} if zp is not None else {})}
        q = KERNELS["quantize"](args)
        zpf = np.float32(zp) if zp is not None else 0.0
        np.testing.assert_array_equal(q, np.clip(np.rint(x / scale) + zpf, *(
            (-128, 127) if dtype == "int8" else (0, 255))).astype(dtype))
        deq = KERNELS["dequantize"]({"input": q, "scale": scale, **({"zero_point": zp} if zp is not None else {})})
        np.testing.assert_array_equal(deq, (q.astype(np.float32) - zpf) * scale)


@pytest.fixture(scope="module")
def fp16_program(tmp_path_factory):
    """A small fp16 ML program with the ops of an SA block and a W8A8 requantization, saved as an .mlpackage."""
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    w = np.random.default_rng(4).standard_normal((8, 3, 3, 3)).astype(np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 12, 12), dtype=types.fp16)], opset_version=ct.target.iOS17)
    def prog(x):
        y = mb.conv(x=x, weight=w, bias=np.linspace(-1, 1, 8).astype(np.float16), pad_type="same")
        r = mb.relu(x=y)
        q = mb.quantize(input=r, scale=np.float16(0.05), output_dtype="uint8", zero_point=np.uint8(3))
        d = mb.dequantize(input=q, scale=np.float16(0.05), zero_point=np.uint8(3))
        s = mb.sigmoid(x=mb.instance_norm(x=y, epsilon=np.float16(1e-5)))
        return mb.add(x=mb.mul(x=d, y=s), y=mb.reduce_mean(x=y, axes=[2, 3], keep_dims=True))

    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                       compute_precision=ct.precision.FLOAT16)
    path = tmp_path_factory.mktemp("mil") / "tiny.mlpackage"
    model.save(str(path))
    return path


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("scale", [1.0, 3000.0, 1e-6])  # plain, overflowing to inf, fp16 subnormals
def test_executor_keeps_fp16_storage_semantics(fp16_program, scale):
    """The executor holds fp16 values in float32 and rounds with round_to_fp16, tabulates the dequantize and skips
    rounding relu: the same bits as running each op's kernel and casting its output to float16, op by op."""
    from sa_deploy.backends.coreml.reference import _BLAS, MILExecutor

    executor = MILExecutor(fp16_program)
    (name,) = executor.inputs
    x = (_randn(1, 3, 12, 12) * scale).astype(np.float16)
    got = executor.run({name: x}, keep=True)
    env: dict = {name: x, **executor._consts}
    for op in executor._ops:  # the plain way: decode the arguments, run the kernel, cast to the declared dtype
        args = {k: executor._decoder.decode(v) for k, v in op.attributes.items() if k != "name"}
        for param, argument in op.inputs.items():
            vals = [env[b.name] if b.WhichOneof("binding") == "name" else executor._decoder.decode(b.value)
                    for b in argument.arguments]
            args[param] = vals[0] if len(vals) == 1 else vals
        out = KERNELS[op.type](args)
        env[op.outputs[0].name] = np.asarray(out).astype(executor._declared[op.outputs[0].name].dtype)
    arrays = {k: v for k, v in env.items() if isinstance(v, np.ndarray)}
    assert set(arrays) <= set(got) and executor.output_names[0] in arrays
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype, key
        assert _same_bits(got[key].astype(np.float32), value.astype(np.float32)), key
    assert any(step.op.type == "dequantize" and step.exact for step in executor._steps)  # the table ran
    if _BLAS._funcs is not None:  # OpenBLAS found: its thread count is back to what it was
        before = int(_BLAS._funcs[0]())
        executor.run({name: x})
        assert int(_BLAS._funcs[0]()) == before
