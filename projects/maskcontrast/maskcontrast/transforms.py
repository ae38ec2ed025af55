"""Two independently augmented views of an image; each view's proposal map follows its geometry.

Everything works on numpy arrays (``cv2``), no torchvision:
random resized crop -> horizontal flip -> colour jitter -> random grayscale.
"""
import math
from typing import Sequence, Tuple

import cv2
import numpy as np

__all__ = ['random_resized_crop_box', 'color_jitter', 'TwoViewTransform']


def random_resized_crop_box(rng: np.random.Generator,
                            height: int,
                            width: int,
                            scale: Sequence[float] = (0.3, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3),
                            attempts: int = 10) -> Tuple[int, int, int, int]:
    """A crop ``(y0, x0, h, w)`` covering a ``scale`` fraction of the image with an aspect ratio
    in ``ratio`` (log-uniform); the whole image when no attempt fits."""
    area = height * width
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, height, width


def color_jitter(rng: np.random.Generator, img: np.ndarray, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> np.ndarray:
    """SimCLR-style jitter of an (H, W, 3) float32 RGB image in [0, 255], factors in random order."""
    ops = rng.permutation(4)
    for op in ops:
        if op == 0 and brightness > 0:
            img = img * rng.uniform(1 - brightness, 1 + brightness)
        elif op == 1 and contrast > 0:
            mean = img.mean()
            img = (img - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        elif op == 2 and saturation > 0:
            gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
            img = (img - gray[..., None]) * rng.uniform(1 - saturation, 1 + saturation) + gray[..., None]
        elif op == 3 and hue > 0:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.float32) / 255., cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + 360. * rng.uniform(-hue, hue)) % 360.
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.
        img = np.clip(img, 0, 255)
    return img.astype(np.float32)


class TwoViewTransform:
    """Makes two augmented views of ``(image, label map)``.

    Args:
        crop_size (int): Side of the square output views.
        scale (tuple): Area fraction of the random resized crop.
        ratio (tuple): Aspect ratio range of the crop.
        flip_prob (float): Horizontal flip probability.
        jitter_prob (float): Probability of colour jitter.
        jitter (tuple): brightness, contrast, saturation, hue strengths.
        gray_prob (float): Probability of converting to grayscale.
        min_fg_fraction (float): Re-draw a crop (up to ``attempts`` times) until proposals cover at
            least this fraction of it (the paper keeps at least 10% of the object in a crop).
        attempts (int): Crop re-draws for ``min_fg_fraction``.
    """

    def __init__(self,
                 crop_size: int = 192,
                 scale: Sequence[float] = (0.3, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 flip_prob: float = 0.5,
                 jitter_prob: float = 0.8,
                 jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
                 gray_prob: float = 0.2,
                 min_fg_fraction: float = 0.05,
                 attempts: int = 10) -> None:
        self.crop_size, self.scale, self.ratio = crop_size, tuple(scale), tuple(ratio)
        self.flip_prob, self.jitter_prob, self.jitter, self.gray_prob = flip_prob, jitter_prob, tuple(jitter), gray_prob
        self.min_fg_fraction, self.attempts = min_fg_fraction, attempts

    def view(self, rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One view: (H, W, 3) uint8 RGB + (H, W) uint8 labels -> (S, S, 3) float32 + (S, S) uint8."""
        height, width = label.shape
        for _ in range(max(1, self.attempts)):
            y0, x0, h, w = random_resized_crop_box(rng, height, width, self.scale, self.ratio)
            crop_label = label[y0:y0 + h, x0:x0 + w]
            if (crop_label > 0).mean() >= self.min_fg_fraction:
                break
        size = (self.crop_size, self.crop_size)
        out_img = cv2.resize(img[y0:y0 + h, x0:x0 + w], size, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        # NEAREST_EXACT samples pixel centres like INTER_LINEAR; INTER_NEAREST is shifted by half a pixel
        out_label = cv2.resize(crop_label, size, interpolation=cv2.INTER_NEAREST_EXACT)
        if rng.random() < self.flip_prob:
            out_img, out_label = out_img[:, ::-1], out_label[:, ::-1]
        if rng.random() < self.jitter_prob:
            out_img = color_jitter(rng, out_img, *self.jitter)
        if rng.random() < self.gray_prob:
            gray = out_img @ np.array([0.299, 0.587, 0.114], np.float32)
            out_img = np.repeat(gray[..., None], 3, axis=2)
        return np.ascontiguousarray(out_img), np.ascontiguousarray(out_label)

    def __call__(self, rng: np.random.Generator, img: np.ndarray,
                 label: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Two independent views: ``img1, label1, img2, label2``."""
        img1, label1 = self.view(rng, img, label)
        img2, label2 = self.view(rng, img, label)
        return img1, label1, img2, label2
