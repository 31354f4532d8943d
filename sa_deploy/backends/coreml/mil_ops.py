"""numpy kernels for the MIL ops our exports produce, written from the MIL op definitions (coremltools docs,
``coremltools.converters.mil.mil.ops.defs``): one function per op, registered in ``KERNELS``.

Each kernel takes the op's named arguments (numpy arrays, python lists for tuple inputs) and returns one array or a
tuple of arrays (one per op output). The executor casts every result to the output dtype the program declares, so
fp16 programs round like fp16 storage would. Arithmetic runs in float32 (float64 for reductions).

``bind`` applies an op's constant arguments once (a conv's weight matrix is laid out once, not per image), and
``round_to_fp16`` is the executor's fast, exact fp16 rounding: fp16 values are held in float32 arrays between ops,
because numpy's own half-precision casts are scalar code and cost more than the ops themselves."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


class UnsupportedFeatureError(ValueError):
    """A known op used with an attribute value these kernels do not cover (never silently approximated)."""

Kernel = Callable[[dict[str, Any]], Any]
KERNELS: dict[str, Kernel] = {}
# op type -> fn(constant arguments, names of the run-time ones) -> kernel of the run-time arguments, or None where
# it prepares nothing for that combination
Binder = Callable[[dict[str, Any], frozenset[str]], "Kernel | None"]
BINDERS: dict[str, Binder] = {}

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


def bind(op_type: str, static: dict[str, Any], dynamic: frozenset[str]) -> Kernel:
    """KERNELS[op_type] with the op's constant arguments applied; the result takes the run-time arguments (named in
    ``dynamic``). A binder, where one exists, prepares the constants once (same arithmetic as the plain kernel)."""
    binder = BINDERS.get(op_type)
    bound = binder(static, dynamic) if binder is not None else None
    if bound is not None:
        return bound
    fn = KERNELS[op_type]
    return lambda args: fn({**static, **args})


_F16_MIN_NORMAL_BITS = np.uint32(0x38800000)  # 2**-14, fp16's smallest normal value, as float32 bits
_F16_MAX = np.float32(65504.0)
_SPLITTER = np.float32(2 ** 13 + 1)  # Veltkamp's constant: 24 - 13 = 11 bits, fp16's precision


def round_to_fp16(x: Any) -> np.ndarray:
    """float32 values rounded to the nearest fp16 value (ties to even), returned as float32: bit for bit
    ``x.astype(float16).astype(float32)`` at a third of its cost (numpy's half casts are scalar code).

    Veltkamp's split: with c = x * (2**13 + 1), c - (c - x) is x rounded to nearest on 24 - 13 = 11 bits in float32
    round-to-nearest-even arithmetic (Dekker 1971; Boldo 2006 proves it, ties included), and fp16 has 11 bits in its
    normal range. The few values below that range (fp16 subnormals, fewer bits) go through numpy's cast, and so does
    an array with NaN or values beyond fp16's range."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.size:
        return x.copy()
    if not (x.max() <= _F16_MAX and x.min() >= -_F16_MAX):  # NaN fails both comparisons
        return _round_to_fp16_slow(x)
    c = x * _SPLITTER
    rounded = np.subtract(c, x)
    np.subtract(c, rounded, out=rounded)
    magnitude = rounded.view(np.uint32) << 1  # the sign bit shifted out
    magnitude -= 1  # zero wraps around to the top: zeros (common after relu or a dequantize) are right as they are
    small = magnitude < (_F16_MIN_NORMAL_BITS << 1) - 1
    if small.any():
        where = np.flatnonzero(small)
        rounded.flat[where] = x.flat[where].astype(np.float16).astype(np.float32)
    return rounded


def _round_to_fp16_slow(x: np.ndarray) -> np.ndarray:
    """round_to_fp16 where some values leave fp16's normal range: those elements through numpy's cast."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf * c - inf: replaced below
        c = x * _SPLITTER
        rounded = c - (c - x)
    magnitude = np.abs(x)
    special = ~(magnitude <= _F16_MAX) | (magnitude < np.float32(2 ** -14))
    rounded[special] = x[special].astype(np.float16).astype(np.float32)
    return rounded


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
    # numerically stable for large |x| in both directions: 1 / (1 + e) for x >= 0, e / (1 + e) below, e = exp(-|x|)
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    # the numerator: 1 where x >= 0, else e; as max(e, x >= 0) since 0 <= e <= 1 (np.where with a mask as random
    # as the signs of x is ~10x slower: a branch per element)
    out = np.maximum(e, x >= 0, dtype=np.float32)
    e += 1
    out /= e
    return out


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
    # elementwise steps on (N*C, spatial) views, in place: the same float64 arithmetic, fewer temporaries, and
    # numpy's row broadcast is faster than its 4-D one
    rows = x.shape[0] * x.shape[1]
    y = x.reshape(rows, -1) - mean.reshape(rows, 1)
    var = np.square(y).reshape(x.shape).mean(axis=axes, keepdims=True)  # biased, as InstanceNorm/GroupNorm define it
    y /= np.sqrt(var + float(_scalar(a.get("epsilon", 1e-5)))).reshape(rows, 1)
    if a.get("gamma") is not None:
        y *= np.broadcast_to(_channel(a["gamma"], x.ndim), mean.shape).reshape(rows, 1)
    if a.get("beta") is not None:
        y += np.broadcast_to(_channel(a["beta"], x.ndim), mean.shape).reshape(rows, 1)
    return y.astype(np.float32).reshape(x.shape)


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


@dataclass(frozen=True)
class _ConvPlan:
    """A conv's constant half, prepared once: weights as one matrix per group, columns in the (channel, kh, kw)
    order that ``_columns`` writes, so each group is a single BLAS matmul."""
    weight: np.ndarray  # (groups, Cout/groups, Cin/groups * kh * kw) float32
    bias: np.ndarray | None  # (Cout, 1) float32
    groups: int
    ksize: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pad_args: dict[str, Any]  # pad_type (+ pad): resolved per input size, "same" depends on it

    @classmethod
    def from_args(cls, a: dict[str, Any]) -> "_ConvPlan":
        w = _f(a["weight"])
        if w.ndim != 4:
            raise UnsupportedFeatureError(f"conv of rank {w.ndim} (only 2-D convolution is implemented)")
        groups = int(_scalar(a.get("groups", 1)))
        if w.shape[0] % groups:
            raise ValueError(f"conv: {w.shape[0]} output channels do not split into {groups} groups")
        bias = _f(a["bias"]).reshape(-1, 1) if a.get("bias") is not None else None
        strides = _ints(a["strides"]) if a.get("strides") is not None else [1, 1]
        dilations = _ints(a["dilations"]) if a.get("dilations") is not None else [1, 1]
        return cls(np.ascontiguousarray(w.reshape(groups, w.shape[0] // groups, -1)), bias, groups,
                   (w.shape[2], w.shape[3]), (strides[0], strides[1]), (dilations[0], dilations[1]),
                   {k: a[k] for k in ("pad_type", "pad") if a.get(k) is not None})

    def __call__(self, x: Any) -> np.ndarray:
        x = _f(x)
        if x.ndim != 4:
            raise UnsupportedFeatureError(f"conv of rank {x.ndim} (only 2-D convolution is implemented)")
        n, c = x.shape[:2]
        if c != self.groups * self.weight.shape[2] // (self.ksize[0] * self.ksize[1]):
            raise ValueError(f"conv input has {c} channels, the weight expects "
                             f"{self.groups * self.weight.shape[2] // (self.ksize[0] * self.ksize[1])}")
        pads = _padding(self.pad_args, x.shape[2:], self.ksize, list(self.strides), list(self.dilations))
        if self.weight.shape[1:] == (1, self.ksize[0] * self.ksize[1]) and self.groups == c:
            return self._depthwise(x, pads)
        cols, (ho, wo) = _columns(x, self.ksize, self.strides, self.dilations, pads)
        out = np.matmul(self.weight, cols.reshape(n, self.groups, -1, ho * wo))  # (N, G, Cout/G, Ho*Wo)
        out = out.reshape(n, -1, ho * wo)
        if self.bias is not None:
            out += self.bias
        return out.reshape(n, -1, ho, wo)

    def _depthwise(self, x: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
        """One filter per channel: a weighted sum of kh*kw shifted views, no im2col (a matmul per channel would be
        thousands of tiny BLAS calls)."""
        (kh, kw), (sh, sw), (dh, dw) = self.ksize, self.strides, self.dilations
        xp = _pad_zeros(x, pads)
        n, c, hp, wp = xp.shape
        ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv window {self.ksize} is larger than the padded input {(hp, wp)}")
        taps = self.weight.reshape(c, kh * kw)
        out = np.zeros((n, c, ho, wo), np.float32)
        term = np.empty_like(out)
        for i in range(kh):
            for j in range(kw):
                view = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
                np.multiply(view, taps[:, i * kw + j].reshape(1, c, 1, 1), out=term)
                out += term
        if self.bias is not None:
            out += self.bias.reshape(1, c, 1, 1)
        return out


def _pad_zeros(x: np.ndarray, pads: list[tuple[int, int]]) -> np.ndarray:
    """Zero padding of the two spatial dims (cheaper than np.pad for this one case)."""
    (top, bottom), (left, right) = pads
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _columns(x: np.ndarray, ksize: tuple[int, int], strides: tuple[int, int], dilations: tuple[int, int],
             pads: list[tuple[int, int]]) -> tuple[np.ndarray, tuple[int, int]]:
    """im2col: (N, C, H, W) -> (N, C, kh, kw, Ho, Wo), column (c, i, j) holding input pixel (c, i*dh + s*y, ...)
    of every output position. A 1x1 unpadded stride-1 conv needs no copy at all."""
    (kh, kw), (sh, sw), (dh, dw) = ksize, strides, dilations
    xp = _pad_zeros(x, pads)
    n, c, hp, wp = xp.shape
    ho, wo = (hp - (kh - 1) * dh - 1) // sh + 1, (wp - (kw - 1) * dw - 1) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv window {ksize} (dilation {dilations}) is larger than the padded input {(hp, wp)}")
    if (kh, kw, sh, sw) == (1, 1, 1, 1):
        return xp, (ho, wo)
    cols = np.empty((n, c, kh, kw, ho, wo), np.float32)
    for i in range(kh):  # one strided block copy per kernel tap, not per pixel
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
    return cols, (ho, wo)


@kernel("conv")
def _conv(a: dict[str, Any]) -> np.ndarray:
    return _ConvPlan.from_args(a)(a["x"])


def _bind_conv(static: dict[str, Any], dynamic: frozenset[str]) -> Kernel | None:
    if dynamic != {"x"}:  # weights computed at run time: prepared per call by the plain kernel
        return None
    plan = _ConvPlan.from_args(static)
    return lambda args: plan(args["x"])


BINDERS["conv"] = _bind_conv


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
    q = np.divide(x, _along(_f(a["scale"]), ax, x.ndim), dtype=np.float32)
    np.rint(q, out=q)
    q += zp
    np.clip(q, lo, hi, out=q)
    return q.astype(_CAST_DTYPES[dtype])


@kernel("dequantize")
def _dequantize(a: dict[str, Any]) -> np.ndarray:
    q = np.asarray(a["input"]).astype(np.float32)
    ax = _axis(a, q.ndim)
    if a.get("zero_point") is not None:
        q -= _along(a["zero_point"], ax, q.ndim).astype(np.float32)
    q *= _along(_f(a["scale"]), ax, q.ndim)
    return q


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
