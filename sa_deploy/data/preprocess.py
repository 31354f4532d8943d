"""Image -> model input, shared by calibration, evaluation and training (one implementation)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from sa_deploy.models.preprocessing import PreprocessConfig

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA (alpha dropped over black), CMYK... -> RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def resize_crop(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """RGB conversion, shorter-side resize to ``cfg.resize``, center crop ``cfg.input_size``; HWC uint8."""
    img = to_rgb(img)
    w, h = img.size
    if min(w, h) != cfg.resize:
        scale = cfg.resize / min(w, h)
        img = img.resize((max(cfg.input_size, round(w * scale)), max(cfg.input_size, round(h * scale))),
                         _RESAMPLE[cfg.interpolation])
        w, h = img.size
    left, top = (w - cfg.input_size) // 2, (h - cfg.input_size) // 2
    if (w, h) != (cfg.input_size, cfg.input_size):
        img = img.crop((left, top, left + cfg.input_size, top + cfg.input_size))
    return np.asarray(img, dtype=np.uint8)


def normalize(batch_hwc_uint8: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N,H,W,3) or (H,W,3) uint8 -> (N,3,H,W) / (3,H,W) float32 normalized with the model's mean/std."""
    x = batch_hwc_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_image(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """One PIL image -> (3,H,W) float32 model input."""
    return normalize(resize_crop(img, cfg), cfg)
