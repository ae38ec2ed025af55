"""Colour refinement of coarse masks with GrabCut (Rother et al., SIGGRAPH 2004; OpenCV's ``grabCut``).

Free Mask's masks are feature cells resized to the image: at stride 32 their borders are blurred by a cell
or more, which costs most of their IoU on objects a few cells wide. Unsupervised segmenters refine such
masks with the image's colours (MaskCut and TokenCut with a CRF). Here each mask seeds a GrabCut in a crop
around it: the mask is "probably foreground", a ring around it "probably background", the rest of the crop
background; GrabCut's colour models and graph cut then move the border to the image's edges.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional

import cv2
import numpy as np

__all__ = ['grabcut_refine', 'grabcut_refine_all']

_POOLS: Dict[int, ThreadPoolExecutor] = {}  # by number of threads
# a forked child (a data loader worker) inherits the pools but not their threads: it makes its own
os.register_at_fork(after_in_child=_POOLS.clear)


def grabcut_refine(image: np.ndarray, mask: np.ndarray, iters: int = 3, margin: float = 0.5,
                   ring: Optional[int] = None, min_keep: float = 0.2) -> np.ndarray:
    """GrabCut of one mask in a crop around it.

    Args:
        image (np.ndarray): (H, W, 3) uint8, any channel order.
        mask (np.ndarray): (H, W) bool coarse mask.
        iters (int): GrabCut iterations.
        margin (float): the crop extends the mask's box by this share of its larger side on each side
            (at least 8 pixels), clipped to the image.
        ring (int, optional): width in pixels of the "probably background" ring around the mask (default:
            an eighth of the box's larger side, at least 2).
        min_keep (float): a result smaller than this share of the mask (or a failed GrabCut) returns the
            mask unchanged: GrabCut found no colour boundary to move to.

    Returns:
        np.ndarray: (H, W) bool refined mask.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return mask
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(bottom - top, right - left)
    pad = max(8, int(round(margin * side)))
    height, width = mask.shape
    y0, y1, x0, x1 = max(0, top - pad), min(height, bottom + pad), max(0, left - pad), min(width, right + pad)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    seed = mask[y0:y1, x0:x1]
    ring = ring or max(2, side // 8)
    grown = cv2.dilate(seed.astype(np.uint8), np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)) > 0
    labels = np.full(seed.shape, cv2.GC_BGD, np.uint8)
    labels[grown] = cv2.GC_PR_BGD
    labels[seed] = cv2.GC_PR_FGD
    if not (labels == cv2.GC_BGD).any():  # the mask fills its crop: no background colour to learn
        return mask
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global RNG: the same mask, whatever ran before
    try:
        cv2.grabCut(crop, labels, None, np.zeros((1, 65)), np.zeros((1, 65)), iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mask
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if refined.sum() < min_keep * seed.sum():
        return mask
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = refined
    return out


def refine_threads() -> int:
    """Threads for :func:`grabcut_refine_all`: this process's CPUs (its affinity), at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def grabcut_refine_all(image: np.ndarray, masks: np.ndarray, iters: int = 3) -> np.ndarray:
    """:func:`grabcut_refine` of each of ``masks`` ((n, H, W) bool) on ``image``; returns (n, H, W) bool.

    The masks are refined in parallel threads (OpenCV releases the GIL; its RNG, seeded per mask, is per thread),
    so the result is the same as one after the other.
    """
    if len(masks) == 0:
        return masks.astype(bool, copy=True)
    threads = refine_threads()
    if len(masks) == 1 or threads == 1:
        return np.stack([grabcut_refine(image, mask, iters=iters) for mask in masks])
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix='grabcut')
    return np.stack(list(_POOLS[threads].map(lambda mask: grabcut_refine(image, mask, iters=iters), masks)))
