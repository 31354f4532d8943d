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
