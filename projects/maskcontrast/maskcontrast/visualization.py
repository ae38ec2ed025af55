"""Pictures of semantic segmentations: image | ground truth | predictions, one colour per class."""
from typing import Dict, List, Sequence

import cv2
import numpy as np

__all__ = ['class_palette', 'colorize', 'segmentation_panel']


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes + 1, 3) uint8 RGB: class 0 (background) dark grey, then distinct hues; the
    last row (index -1) is black, for pixels of no class (unmatched clusters)."""
    colors = [(60, 60, 60)]
    for i in range(1, num_classes):
        hue = int(180 * (i - 1) / max(num_classes - 1, 1))  # OpenCV hue in [0, 180)
        hsv = np.uint8([[[hue, 200, 255]]])
        colors.append(tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    colors.append((0, 0, 0))
    return np.array(colors, np.uint8)


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) int class map (-1 allowed) -> (H, W, 3) uint8 RGB."""
    return palette[np.where(label < 0, len(palette) - 1, label)]


def _titled(image: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((22, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def segmentation_panel(image: np.ndarray, gt: np.ndarray, predictions: Dict[str, np.ndarray],
                       classes: Sequence[str], alpha: float = 0.6) -> np.ndarray:
    """One row: the (H, W, 3) uint8 RGB image, the (H, W) ground truth and each named (H, W)
    prediction blended over the image, plus a legend of the classes underneath.

    Returns:
        ndarray: (H', W', 3) uint8 RGB.
    """
    palette = class_palette(len(classes))

    def blend(label: np.ndarray) -> np.ndarray:
        return (alpha * colorize(label, palette) + (1 - alpha) * image).astype(np.uint8)

    tiles: List[np.ndarray] = [_titled(image, 'image'), _titled(blend(gt), 'ground truth')]
    tiles += [_titled(blend(pred), name) for name, pred in predictions.items()]
    row = np.concatenate(tiles, axis=1)
    legend = np.full((22, row.shape[1], 3), 255, np.uint8)
    x = 4
    for i, name in enumerate(classes):
        cv2.rectangle(legend, (x, 5), (x + 12, 17), tuple(int(c) for c in palette[i]), -1)
        cv2.putText(legend, name, (x + 16, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 24 + 9 * len(name)
    return np.concatenate([row, legend], axis=0)
