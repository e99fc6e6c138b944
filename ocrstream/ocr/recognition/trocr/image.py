"""TrOCR pre-processing: the checkpoint's ``ViTImageProcessor``, bit-exact, without transformers.

transformers 4.57 ``image_processing_vit.py``: BGR -> RGB (OpenCV), resize to ``size`` with
Pillow's ``Image.resize`` and the config's ``resample`` filter (the very call transformers
makes, see :func:`pil_resize`), then in numpy ``x * rescale_factor`` computed in float64 and
cast to float32, ``(x - mean) / std`` in float32, CHW.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["PIL_FILTERS", "ImageProcessorSpec", "pil_resize"]

#: PIL resample codes (NEAREST=0, LANCZOS=1, BILINEAR=2, BICUBIC=3, BOX=4, HAMMING=5).
PIL_FILTERS = (0, 1, 2, 3, 4, 5)


def pil_resize(img: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 with ``PIL.Image.resize(size, resample)``, as transformers does.

    transformers' ``image_transforms.resize`` converts uint8 arrays to a PIL image and calls
    ``Image.resize(size, resample, reducing_gap=None)``; calling the same function is the only
    way to be bit-exact for every Pillow version (Pillow 13 picks the order of its two
    separable passes by itself, so a numpy re-implementation of ``Resample.c`` drifts by 1
    grey level on some sizes). Pillow is a runtime dependency of ocrstream anyway.

    Args:
        img: ``(H, W, 3)`` uint8 (RGB or BGR: channels are resized independently).
        size: ``(width, height)`` in px, as PIL takes it.
        resample: PIL filter code, see :data:`PIL_FILTERS`.

    Raises:
        ValueError: unknown ``resample`` or an empty image / size.
    """
    from PIL import Image

    if resample not in PIL_FILTERS:
        raise ValueError(f"unknown PIL resample filter {resample}")
    if min(size) < 1 or img.size == 0:
        raise ValueError(f"cannot resize {img.shape} to {size}")
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
        (int(size[0]), int(size[1])), resample=resample, reducing_gap=None))


@dataclass(frozen=True)
class ImageProcessorSpec:
    """The parts of a ``ViTImageProcessor`` config (``preprocessor_config.json``) that TrOCR uses.

    Attributes:
        height, width: model input size in px.
        resample: PIL filter code (2 = bilinear in microsoft/trocr-* configs).
        do_resize, do_rescale, do_normalize: the processor's switches.
        rescale_factor: multiplier applied to uint8 values (1/255).
        mean, std: per-channel normalisation, RGB order.
    """

    height: int = 384
    width: int = 384
    resample: int = 2
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ImageProcessorSpec:
        """Parse a ``preprocessor_config.json`` dict.

        Raises:
            ValueError: ``size`` is not ``{"height", "width"}`` or an int (square).
        """
        size = cfg.get("size", {"height": 384, "width": 384})
        if isinstance(size, int):
            height = width = size
        elif isinstance(size, dict) and {"height", "width"} <= set(size):
            height, width = int(size["height"]), int(size["width"])
        else:
            raise ValueError(f"unsupported image processor size {size!r}; expected {{'height', 'width'}}")
        mean = cfg.get("image_mean", [0.5, 0.5, 0.5])
        std = cfg.get("image_std", [0.5, 0.5, 0.5])
        mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
        std = [std] * 3 if isinstance(std, (int, float)) else std
        return cls(
            height=height,
            width=width,
            resample=int(cfg.get("resample", 2)),
            do_resize=bool(cfg.get("do_resize", True)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
        )

    def __call__(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 BGR crops -> ``(N, 3, height, width)`` float32 pixel_values.

        Equal to ``ViTImageProcessor(...)(rgb_images, return_tensors="np").pixel_values``.
        """
        out = np.empty((len(images_bgr), 3, self.height, self.width), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for k, img in enumerate(images_bgr):
            rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if self.do_resize:
                rgb = pil_resize(rgb, (self.width, self.height), self.resample)
            if self.do_rescale:
                x = (rgb.astype(np.float64) * self.rescale_factor).astype(np.float32)
            else:
                x = rgb.astype(np.float32)
            if self.do_normalize:
                x = (x - mean) / std
            out[k] = x.transpose(2, 0, 1)
        return out
