"""CoreML runner: ``MLModel.predict`` on macOS, the numpy reference MIL executor elsewhere (CoreML cannot predict on
Linux). Same contract as every runner: normalized NCHW float32 in, logits (N, classes) out.

Exports have batch 1, so a batch runs one sample at a time. Image-input models get the pixels back from the
normalized input (x*std + mean)*255; MLModel.predict needs a PIL image, i.e. pixels rounded to uint8 (feed inputs
made from real uint8 images for exact parity there). Classifier models return their per-class scores in label order."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sa_deploy.backends.base import Runner
from sa_deploy.backends.coreml.mil_reader import read_mlpackage
from sa_deploy.errors import SADeployError
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.util.int8_kernels import EMULATED, INT32, Int8Path

BACKENDS = ("auto", "coreml", "reference")


class CoreMLRunner(Runner):
    name = "coreml"

    def __init__(self, path: str | Path, backend: str = "auto", threads: int | None = None) -> None:
        # threads: accepted for the common runner signature; the reference executor is numpy (BLAS threads)
        super().__init__()
        if backend not in BACKENDS:
            raise SADeployError(f"unknown CoreML backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
        if backend == "coreml" and sys.platform != "darwin":
            raise SADeployError("CoreML prediction needs macOS; use backend 'reference' (numpy MIL executor)")
        self.path = Path(path)
        self.backend = "coreml" if backend == "coreml" or (backend == "auto" and sys.platform == "darwin") \
            else "reference"
        self.name = "coreml" if self.backend == "coreml" else "coreml-reference"

    def _activate(self) -> None:
        package = read_mlpackage(self.path)
        desc = package.spec.description
        self.input_name = desc.input[0].name
        self.image_input = desc.input[0].type.WhichOneof("Type") == "imageType"
        self.probs_name = desc.predictedProbabilitiesName or None
        self.output_name = self.probs_name or desc.output[0].name
        self.precision = package.metadata.get("sa_deploy.precision", "fp32")
        raw = package.metadata.get("sa_deploy.preprocess")
        try:
            self.preprocess = PreprocessConfig.from_dict(json.loads(raw)) if raw else None
        except ValueError as exc:  # JSONDecodeError too
            raise SADeployError(f"{self.path.name} has damaged sa_deploy.preprocess metadata ({exc}); re-export "
                                "it") from None
        if (self.image_input or self.probs_name) and self.preprocess is None:
            raise SADeployError(f"{self.path.name} has an image input or classifier output but no sa_deploy "
                                "preprocess metadata (mean/std, class names)")
        if self.backend == "coreml":
            import coremltools as ct

            self.model = ct.models.MLModel(str(self.path))
        else:
            from sa_deploy.backends.coreml.reference import MILExecutor

            self.model = MILExecutor(package)

    def _deactivate(self) -> None:
        self.model = None

    def int8_path(self) -> Int8Path | None:
        """W8A8 off macOS runs in the numpy executor: quantize/dequantize computed in float, int32 semantics (the
        file's own numerics, no CPU kernel path to diagnose); on macOS Core ML does not say which unit ran it."""
        if self.precision != "w8a8":
            return None
        if self.backend == "reference":
            return Int8Path(self.name, EMULATED, "numpy MIL executor (Q/DQ in float)", "reference executor")
        return Int8Path(self.name, INT32, "Core ML (CPU / GPU / Neural Engine: not reported)", "Core ML")

    def _pixels(self, x: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.preprocess.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.preprocess.std, np.float32).reshape(3, 1, 1)
        return (x * std + mean) * 255.0

    def _feed(self, sample: np.ndarray) -> object:
        if not self.image_input:
            return sample[None]
        pixels = self._pixels(sample)
        if self.backend == "reference":
            return pixels[None].astype(np.float32)
        from PIL import Image

        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(1, 2, 0), "RGB")

    def _scores(self, out: object) -> np.ndarray:
        if self.probs_name and isinstance(out, dict):  # MLModel.predict: {label: score}
            return np.asarray([out[c] for c in self.preprocess.class_names], np.float32)
        return np.asarray(out, np.float32).reshape(-1)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for sample in x:
            feed = {self.input_name: self._feed(sample)}
            out = self.model.predict(feed) if self.backend == "coreml" else self.model.run(feed)
            rows.append(self._scores(out[self.output_name]))
        return np.stack(rows)
