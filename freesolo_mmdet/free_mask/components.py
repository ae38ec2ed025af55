"""Masks split into their connected components: one instance per separate piece.

A query of Free Mask (or a trained model's kernel) selects every cell that looks like it, so in a scene of
several similar objects one coarse mask often covers a few of them. After GrabCut has moved the mask's
border to the image's edges, the objects are separate pieces of it. Each piece at least ``min_fraction`` of
the mask's largest one becomes a mask of its own, with the parent's score and other fields; smaller pieces
(GrabCut's specks) are dropped.
"""
from typing import Tuple

import cv2
import numpy as np

__all__ = ['split_components']


def split_components(masks: np.ndarray, min_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """The 8-connected components of each mask that are at least ``min_fraction`` of its largest one.

    Args:
        masks (np.ndarray): (n, H, W) bool.
        min_fraction (float): in [0, 1]; 1 keeps only the largest component (and ties), 0 every one.

    Returns:
        tuple[np.ndarray, np.ndarray]: (m, ) int64, the index of the mask each component comes from
        (non-decreasing: the components of a mask follow each other, largest first), and the (m, H, W)
        bool components. An empty mask gives no component.
    """
    if not 0 <= min_fraction <= 1:
        raise ValueError(f'min_fraction must be in [0, 1], got {min_fraction}')
    sources, pieces = [], []
    for index, mask in enumerate(masks):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        if count <= 2:  # background and at most one piece: the mask itself
            if count == 2:
                sources.append(index)
                pieces.append(mask.astype(bool))
            continue
        areas = stats[1:, cv2.CC_STAT_AREA]
        for label in np.argsort(-areas, kind='stable'):
            if areas[label] >= min_fraction * areas.max():
                sources.append(index)
                pieces.append(labels == label + 1)
    shape = masks.shape[1:]
    if not pieces:
        return np.zeros(0, dtype=np.int64), np.zeros((0, *shape), dtype=bool)
    return np.asarray(sources, dtype=np.int64), np.stack(pieces)
