"""numpy kernels for the MIL ops our exports produce, written from the MIL op definitions (coremltools docs,
``coremltools.converters.mil.mil.ops.defs``): one function per op, registered in ``KERNELS``.

Each kernel takes the op's named arguments (numpy arrays, python lists for tuple inputs) and returns one array or a
tuple of arrays (one per op output). The executor casts every result to the output dtype the program declares, so
fp16 programs round like fp16 storage would. Arithmetic runs in float32 (float64 for reductions)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


class UnsupportedFeatureError(ValueError):
    """A known op used with an attribute value these kernels do not cover (never silently approximated)."""

Kernel = Callable[[dict[str, Any]], Any]
KERNELS: dict[str, Kernel] = {}

_CAST_DTYPES = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "int8": np.int8,
                "uint8": np.uint8, "uint16": np.uint16, "bool": np.bool_, "fp64": np.float64, "int64": np.int64}


def kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for n in names:
            KERNELS[n] = fn
        return fn
    return register


def _f(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _scalar(a: Any) -> Any:
    return np.asarray(a).item()


def _ints(a: Any) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


# ---- elementwise -------------------------------------------------------------------------------------------
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide, "maximum": np.maximum,
           "minimum": np.minimum, "pow": np.power}
for _name, _fn in _BINARY.items():
    KERNELS[_name] = (lambda fn: lambda a: fn(_f(a["x"]), _f(a["y"])))(_fn)

KERNELS["relu"] = lambda a: np.maximum(_f(a["x"]), 0)
KERNELS["relu6"] = lambda a: np.clip(_f(a["x"]), 0, 6)
KERNELS["clip"] = lambda a: np.clip(_f(a["x"]), _scalar(a["alpha"]), _scalar(a["beta"]))
KERNELS["exp"] = lambda a: np.exp(_f(a["x"]))
KERNELS["sqrt"] = lambda a: np.sqrt(_f(a["x"]))


@kernel("sigmoid")
def _sigmoid(a: dict[str, Any]) -> np.ndarray:
    x = _f(a["x"])
    # numerically stable for large |x| in both directions
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@kernel("softmax")
def _softmax(a: dict[str, Any]) -> np.ndarray:
    x = _f(a["x"])
    axis = int(_scalar(a.get("axis", -1)))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@kernel("cast")
def _cast(a: dict[str, Any]) -> np.ndarray:
    return np.asarray(a["x"]).astype(_CAST_DTYPES[str(a["dtype"])])


# ---- shape ops ---------------------------------------------------------------------------------------------
KERNELS["reshape"] = lambda a: np.reshape(a["x"], _ints(a["shape"]))
KERNELS["transpose"] = lambda a: np.transpose(a["x"], _ints(a["perm"]))
KERNELS["identity"] = lambda a: np.asarray(a["x"])


@kernel("concat")
def _concat(a: dict[str, Any]) -> np.ndarray:
    values, axis = [np.asarray(v) for v in a["values"]], int(_scalar(a["axis"]))
    if bool(_scalar(a.get("interleave", False))):
        # interleave: take one slice of size d/len(values) from each input in turn along axis
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@kernel("split")
def _split(a: dict[str, Any]) -> tuple[np.ndarray, ...]:
    x, axis = np.asarray(a["x"]), int(_scalar(a["axis"]))
    if a.get("split_sizes") is not None:
        bounds = np.cumsum(_ints(a["split_sizes"]))[:-1]
        return tuple(np.split(x, bounds, axis=axis))
    return tuple(np.split(x, int(_scalar(a["num_splits"])), axis=axis))


@kernel("squeeze")
def _squeeze(a: dict[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"])
    return np.squeeze(x, axis=tuple(_ints(a["axes"]))) if a.get("axes") is not None else np.squeeze(x)


KERNELS["expand_dims"] = lambda a: np.expand_dims(a["x"], tuple(_ints(a["axes"])))


# ---- reductions and normalisation -----------------------------------------------------------------------------
def _reduce(fn: Callable) -> Kernel:
    def run(a: dict[str, Any]) -> np.ndarray:
        x = np.asarray(a["x"], np.float64)
        axes = tuple(_ints(a["axes"])) if a.get("axes") is not None else None
        return fn(x, axis=axes, keepdims=bool(_scalar(a.get("keep_dims", False)))).astype(np.float32)
    return run


KERNELS.update({"reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
                "reduce_min": _reduce(np.min)})


def _channel(v: Any, rank: int) -> np.ndarray:
    """(C,) per-channel parameter -> broadcastable against (N, C, ...) of ``rank``."""
    return _f(v).reshape((1, -1) + (1,) * (rank - 2))


@kernel("instance_norm")
def _instance_norm(a: dict[str, Any]) -> np.ndarray:
    x = np.asarray(a["x"], np.float64)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased, as InstanceNorm/GroupNorm define it
    y = (x - mean) / np.sqrt(var + float(_scalar(a.get("epsilon", 1e-5))))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x.ndim)
    if a.get("beta") is not None:
        y = y + _channel(a["beta"], x.ndim)
    return y.astype(np.float32)


@kernel("batch_norm")
def _batch_norm(a: dict[str, Any]) -> np.ndarray:
    x = _f(a["x"])
    y = (x - _channel(a["mean"], x.ndim)) / np.sqrt(_channel(a["variance"], x.ndim)
                                                    + float(_scalar(a.get("epsilon", 1e-5))))
    if a.get("gamma") is not None:
        y = y * _channel(a["gamma"], x.ndim)
    if a.get("beta") is not None:
        y = y + _channel(a["beta"], x.ndim)
    return y


# ---- linear algebra ----------------------------------------------------------------------------------------------
@kernel("linear")
def _linear(a: dict[str, Any]) -> np.ndarray:
    y = _f(a["x"]) @ _f(a["weight"]).T
    return y + _f(a["bias"]) if a.get("bias") is not None else y


@kernel("matmul")
def _matmul(a: dict[str, Any]) -> np.ndarray:
    x, y = _f(a["x"]), _f(a["y"])
    if bool(_scalar(a.get("transpose_x", False))):
        x = np.swapaxes(x, -1, -2)
    if bool(_scalar(a.get("transpose_y", False))):
        y = np.swapaxes(y, -1, -2)
    return x @ y


def _padding(a: dict[str, Any], spatial: tuple[int, ...], kernel_size: tuple[int, ...], strides: list[int],
             dilations: list[int]) -> list[tuple[int, int]]:
    """(before, after) per spatial dim for MIL's pad_type valid / custom / same / same_lower."""
    pad_type = str(a.get("pad_type", "valid"))
    n = len(spatial)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        p = _ints(a["pad"])
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(spatial, kernel_size, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise ValueError(f"unknown pad_type '{pad_type}'")


def _windows(x: np.ndarray, kernel_size: tuple[int, int], strides: list[int], dilations: list[int]) -> np.ndarray:
    """(N, C, H, W) padded -> (N, C, Ho, Wo, kh, kw) strided sliding windows (a view, no copy)."""
    kh, kw = kernel_size
    (sh, sw), (dh, dw) = strides, dilations
    win = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


@kernel("conv")
def _conv(a: dict[str, Any]) -> np.ndarray:
    x, w = _f(a["x"]), _f(a["weight"])
    if x.ndim != 4:
        raise UnsupportedFeatureError(f"conv of rank {x.ndim} (only 2-D convolution is implemented)")
    groups = int(_scalar(a.get("groups", 1)))
    strides = _ints(a["strides"]) if a.get("strides") is not None else [1, 1]
    dilations = _ints(a["dilations"]) if a.get("dilations") is not None else [1, 1]
    ksize = tuple(w.shape[2:])
    pads = _padding(a, x.shape[2:], ksize, strides, dilations)
    if ksize == (1, 1) and groups == 1 and not any(sum(pads, ())):  # pointwise: a plain matmul over channels
        xs = x[:, :, ::strides[0], ::strides[1]]
        out = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], xs, optimize=True)
        return _add_bias(out, a)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    win = _windows(xp, ksize, strides, dilations)  # (N, C, Ho, Wo, kh, kw)
    n, c, ho, wo = win.shape[:4]
    cout, cg = w.shape[0], c // groups
    if cg == 1 and cout == groups:  # depthwise: one filter per channel, elementwise product + window sum
        out = np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)
    else:  # im2col per group: (N*Ho*Wo, Cg*kh*kw) @ (Cg*kh*kw, Cout/groups)
        cols = win.reshape(n, groups, cg, ho, wo, *ksize).transpose(1, 0, 3, 4, 2, 5, 6)
        cols = cols.reshape(groups, n * ho * wo, -1)
        wg = w.reshape(groups, cout // groups, -1).transpose(0, 2, 1)
        out = np.matmul(cols, wg)  # (G, N*Ho*Wo, Cout/G)
        out = out.reshape(groups, n, ho, wo, -1).transpose(1, 0, 4, 2, 3).reshape(n, cout, ho, wo)
    return _add_bias(out, a)


def _add_bias(out: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    if a.get("bias") is not None:
        out = out + _f(a["bias"]).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pool(reduce: str) -> Kernel:
    def run(a: dict[str, Any]) -> np.ndarray:
        x = _f(a["x"])
        ksize = tuple(_ints(a["kernel_sizes"]))
        strides = _ints(a["strides"]) if a.get("strides") is not None else [1, 1]
        if bool(_scalar(a.get("ceil_mode", False))):
            raise UnsupportedFeatureError("pooling with ceil_mode=True")
        pads = _padding(a, x.shape[2:], ksize, strides, [1, 1])
        fill = -np.inf if reduce == "max" else 0.0
        xp = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=fill)
        win = _windows(xp, ksize, strides, [1, 1])
        if reduce == "max":
            return win.max(axis=(4, 5))
        total = win.sum(axis=(4, 5), dtype=np.float64)
        if bool(_scalar(a.get("exclude_padding_from_average", False))):
            ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), [(0, 0), (0, 0)] + pads)
            count = _windows(ones, ksize, strides, [1, 1]).sum(axis=(4, 5))
        else:
            count = float(np.prod(ksize))
        return (total / count).astype(np.float32)
    return run


KERNELS["avg_pool"] = _pool("avg")
KERNELS["max_pool"] = _pool("max")


# ---- quantization --------------------------------------------------------------------------------------------------
def _along(v: Any, axis: int | None, rank: int) -> np.ndarray:
    """Per-channel quantization parameter (K,) -> broadcastable along ``axis``; scalars stay scalars."""
    v = np.asarray(v)
    if v.ndim == 0 or axis is None:
        return v
    shape = [1] * rank
    shape[axis] = -1
    return v.reshape(shape)


def _axis(a: dict[str, Any], rank: int) -> int | None:
    if a.get("axis") is None:
        return None
    ax = int(_scalar(a["axis"]))
    return ax + rank if ax < 0 else ax


_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}


@kernel("quantize")
def _quantize(a: dict[str, Any]) -> np.ndarray:
    x = _f(a["input"])
    ax = _axis(a, x.ndim)
    zp = _along(a["zero_point"], ax, x.ndim).astype(np.float32) if a.get("zero_point") is not None else 0.0
    dtype = str(a["output_dtype"])
    lo, hi = _QRANGE[dtype]
    # MIL quantize: round half to even, add zero point, saturate
    q = np.rint(x / _along(_f(a["scale"]), ax, x.ndim)) + zp
    return np.clip(q, lo, hi).astype(_CAST_DTYPES[dtype])


@kernel("dequantize")
def _dequantize(a: dict[str, Any]) -> np.ndarray:
    q = np.asarray(a["input"]).astype(np.float32)
    ax = _axis(a, q.ndim)
    zp = _along(a["zero_point"], ax, q.ndim).astype(np.float32) if a.get("zero_point") is not None else 0.0
    return (q - zp) * _along(_f(a["scale"]), ax, q.ndim)


@kernel("constexpr_affine_dequantize")
def _affine_dequantize(a: dict[str, Any]) -> np.ndarray:
    q = np.asarray(a["quantized_data"]).astype(np.float32)
    ax = _axis(a, q.ndim)
    zp = _along(a["zero_point"], ax, q.ndim).astype(np.float32)
    return (q - zp) * _along(_f(a["scale"]), ax, q.ndim)


def _expand_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A block-wise parameter (same rank as the data, each dim dividing it) repeated up to the data's shape."""
    out = np.asarray(param)
    if out.ndim != len(shape):
        raise ValueError(f"block-wise parameter of rank {out.ndim} for data of rank {len(shape)}")
    for axis, (p, d) in enumerate(zip(out.shape, shape)):
        if d % p:
            raise ValueError(f"block-wise parameter dim {p} does not divide data dim {d}")
        out = np.repeat(out, d // p, axis=axis)
    return out


@kernel("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: dict[str, Any]) -> np.ndarray:
    data = np.asarray(a["data"]).astype(np.float32)
    if a.get("offset") is not None:
        data = data - _expand_blocks(np.asarray(a["offset"]).astype(np.float32), data.shape)
    return data * _expand_blocks(_f(a["scale"]), data.shape)


@kernel("constexpr_lut_to_dense")
def _lut_to_dense(a: dict[str, Any]) -> np.ndarray:
    lut, indices = np.asarray(a["lut"]), np.asarray(a["indices"])
    if a.get("shape") is not None:  # iOS16 form: 1-D lut, indices packed little-endian into uint8
        from sa_deploy.backends.coreml.mil_reader import unpack_bits

        shape = tuple(_ints(a["shape"]))
        nbits = int(np.log2(lut.shape[-1]))
        flat = unpack_bits(indices, nbits, int(np.prod(shape)))
        return lut.reshape(-1)[flat].reshape(shape)
    # iOS18 form: lut (*blocks, 2**nbits, vector_size), indices unpacked with the output's shape
    if lut.shape[-1] != 1:
        raise UnsupportedFeatureError("vector palettization (lut vector_size > 1)")
    blocks = lut.shape[:-2]
    table = lut[..., 0]  # (*blocks, K)
    block_index = [np.arange(d) // (d // b) for d, b in zip(indices.shape, blocks)]
    grids = np.ix_(*block_index)
    return table[tuple(grids) + (indices.astype(np.int64),)]


# ---- classifier ---------------------------------------------------------------------------------------------------
@kernel("classify")
def _classify(a: dict[str, Any]) -> tuple[Any, np.ndarray]:
    probs = np.asarray(a["probabilities"], np.float32).reshape(-1)
    classes = [c if isinstance(c, str) else np.asarray(c).item() for c in a["classes"]]
    return classes[int(probs.argmax())], probs
