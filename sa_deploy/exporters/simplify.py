"""onnxsim with a checked fallback: a simplified graph is kept only if onnxsim says it checked out *and* it
matches the unsimplified graph on onnxruntime for a seeded input."""
from __future__ import annotations

import numpy as np
import onnx


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def simplify(model: onnx.ModelProto, example: np.ndarray, atol: float = 1e-4) -> tuple[onnx.ModelProto, str]:
    """(model, note): the simplified model, or the input model and the reason simplification was not kept."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from C++ on graphs it cannot handle
        return model, f"onnxsim failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); kept unsimplified"
    if not ok:
        return model, "onnxsim check failed; kept unsimplified"
    diff = float(np.abs(_run(simplified, example) - _run(model, example)).max())
    if not diff <= atol:
        return model, f"onnxsim output differs by {diff:.2e} > {atol:g}; kept unsimplified"
    return simplified, f"onnxsim: {len(model.graph.node)} -> {len(simplified.graph.node)} nodes"
