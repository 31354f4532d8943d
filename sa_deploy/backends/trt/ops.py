"""Which ONNX operators TensorRT's ONNX parser accepts (default domain), as data.

Source: onnx-tensorrt ``docs/operators.md``, revision "TensorRT 8.5 supports operators up to Opset 17"
(https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md, commit 6d0ab7be; transcribed by hand, the
"Supported" column only). We export opset 17, so this is the table for our graphs; newer parsers (TensorRT 10/11)
only add operators, so an op accepted here is accepted there. Ops the table marks "N" are kept apart so that the
lint can say "unsupported" rather than "unknown". Restrictions from the table that the lint checks itself (Q/DQ
zero point 0, INT8 Q/DQ only, InstanceNormalization scale/bias initializers, Conv weights initializers, rank) are
rules in ``backends.trt.lint``.
"""
from __future__ import annotations

TABLE_SOURCE = "onnx-tensorrt docs/operators.md (TensorRT 8.5, opset <= 17, commit 6d0ab7be)"
TABLE_MAX_OPSET = 17

SUPPORTED: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul
Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

UNSUPPORTED: frozenset[str] = frozenset("""
Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
HammingWindow HannWindow Hardmax IsInf LayerNormalization MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix
Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul STFT
SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap
SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer Unique
""".split())

assert not SUPPORTED & UNSUPPORTED
