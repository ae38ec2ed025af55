"""Confusion matrices, Hungarian matching of clusters to classes, IoU."""
from typing import Dict, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = ['confusion_matrix', 'iou_from_confusion', 'hungarian_match', 'hungarian_miou']


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_pred: int, num_gt: int,
                     ignore_index: Optional[int] = 255) -> np.ndarray:
    """(num_pred, num_gt) int64 pixel counts: ``conf[p, g]`` = pixels predicted p with label g.

    Args:
        pred, gt (Tensor): integer tensors of the same shape; gt pixels equal to ``ignore_index``
            are left out.
    """
    pred, gt = pred.reshape(-1).long(), gt.reshape(-1).long()
    if pred.shape != gt.shape:
        raise ValueError(f'pred and gt differ in size: {pred.numel()} vs {gt.numel()}')
    keep = (gt >= 0) & (gt < num_gt) & (pred >= 0) & (pred < num_pred)
    if ignore_index is not None:
        keep &= gt != ignore_index
    flat = pred[keep] * num_gt + gt[keep]
    return torch.bincount(flat, minlength=num_pred * num_gt).reshape(num_pred, num_gt).cpu().numpy()


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU of a square (pred x gt) confusion matrix; NaN for classes absent from both."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, tp / union, np.nan)


def hungarian_match(conf: np.ndarray) -> np.ndarray:
    """One-to-one cluster -> class map maximising matched pixels.

    Args:
        conf (ndarray): (K, C) confusion matrix, clusters x classes, K >= C.

    Returns:
        ndarray: (K, ) class of every cluster; -1 for clusters left unmatched (K > C).
    """
    rows, cols = linear_sum_assignment(conf, maximize=True)
    mapping = np.full(conf.shape[0], -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def hungarian_miou(conf: np.ndarray) -> Dict[str, object]:
    """mIoU after Hungarian matching of a (K clusters, C classes) confusion matrix.

    Returns:
        dict: ``miou`` (mean over classes, NaN classes skipped), ``ious`` (C, ), ``mapping`` (K, )
        and ``pixel_acc`` (matched pixels / all pixels). Unmatched clusters count as wrong.
    """
    mapping = hungarian_match(conf)
    num_classes = conf.shape[1]
    matched = np.zeros((num_classes, num_classes), dtype=np.int64)
    for cluster, cls in enumerate(mapping):
        if cls >= 0:
            matched[cls] += conf[cluster]
    # pixels of unmatched clusters are false negatives of their class: add them to the union
    unmatched = conf[mapping < 0].sum(0).astype(np.float64)
    tp = np.diag(matched).astype(np.float64)
    union = matched.sum(0) + matched.sum(1) - tp + unmatched
    with np.errstate(invalid='ignore', divide='ignore'):
        ious = np.where(union > 0, tp / union, np.nan)
    total = conf.sum()
    return dict(miou=float(np.nanmean(ious)), ious=ious, mapping=mapping,
                pixel_acc=float(tp.sum() / total) if total else float('nan'))
