# Copyright (c) freesolo_mmdet contributors.
"""Projection losses of FreeSOLO: dice on the row/column projections of masks.

Both losses compare a predicted mask with a coarse (pseudo) mask only through
their projections onto the two image axes, which is robust to the noisy
interior of coarse masks:

* :class:`MaxProjLoss` (from BoxInst) uses max-projections, i.e. it only asks
  the prediction to fill the coarse mask's bounding box extent.
* :class:`AvgProjLoss` (FreeSOLO) uses mean-projections, which also constrain
  how much of every row/column is covered; without it the model collapses to
  object contours.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmdet.registry import MODELS

__all__ = ['max_projection', 'mean_projection', 'MaxProjLoss', 'AvgProjLoss']


def _dice(pred: Tensor, target: Tensor, eps: float) -> Tensor:
    """Dice loss ``1 - 2 sum(xy) / (sum(x^2) + sum(y^2) + eps)``.

    Args:
        pred (Tensor): (N, L) values in [0, 1].
        target (Tensor): (N, L) values in [0, 1].

    Returns:
        Tensor: (N, ) per-instance loss.
    """
    inter = (pred * target).sum(dim=1)
    union = (pred * pred).sum(dim=1) + (target * target).sum(dim=1)
    return 1 - 2 * inter / (union + eps)


def max_projection(masks: Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """The max of ``masks`` along ``dim``, as ``dtype`` (default: the masks' dtype); bool or uint8 masks are
    reduced before they are converted."""
    return masks.amax(dim).to(dtype or masks.dtype)


def mean_projection(masks: Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """The mean of ``masks`` along ``dim``, summed in ``dtype`` (default: the masks' dtype; bool or uint8 masks
    need a float one). The division acts on the reduced tensor, so that the backward pass writes no full-size
    quotient (``torch.mean``'s does)."""
    return masks.sum(dim, dtype=dtype or masks.dtype) / masks.shape[dim]


class _ProjLoss(nn.Module):
    """Shared forward of the projection losses; subclasses give the
    projections of the mask probabilities (:meth:`prob_projections`)."""

    project: Callable[..., Tensor]

    def __init__(self, loss_weight: float, eps: float = 1e-5) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps

    def prob_projections(self, mask_logits: Tensor) -> Tuple[Tensor, Tensor]:
        """(N, W) and (N, H): the projections along H and along W of
        ``mask_logits.sigmoid()``."""
        probs = mask_logits.sigmoid()
        return self.project(probs, 1), self.project(probs, 2)

    def instance_losses(self, mask_logits: Tensor, targets: Tensor) -> Tensor:
        """(N, ) the loss of each instance times ``loss_weight``: the dice of
        :meth:`prob_projections` and the targets' projections.

        Args:
            mask_logits (Tensor): (N, H, W) mask logits.
            targets (Tensor): (N, H, W) binary coarse masks (float, bool or
                uint8).
        """
        if mask_logits.shape != targets.shape:
            raise ValueError(f'mask_logits {tuple(mask_logits.shape)} and '
                             f'targets {tuple(targets.shape)} differ in shape')
        along_h, along_w = self.prob_projections(mask_logits)
        dtype = mask_logits.dtype
        loss = (_dice(along_h, self.project(targets, 1, dtype), self.eps) +
                _dice(along_w, self.project(targets, 2, dtype), self.eps))
        return loss * self.loss_weight

    def forward(self, mask_logits: Tensor, targets: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            mask_logits (Tensor): (N, H, W) mask logits.
            targets (Tensor): (N, H, W) binary coarse masks (float or bool).

        Returns:
            Tensor: scalar, mean over the N instances times ``loss_weight``;
            a graph-connected zero when N == 0.
        """
        losses = self.instance_losses(mask_logits, targets)
        return losses.mean() if len(losses) else mask_logits.sum() * 0


@MODELS.register_module()
class MaxProjLoss(_ProjLoss):
    """Dice of the max-projections along H (-> (N, W)) plus along W
    (-> (N, H)) of the mask probabilities and the coarse masks.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        eps (float): Dice denominator smoothing. Defaults to 1e-5.
    """

    project = staticmethod(max_projection)

    def __init__(self, loss_weight: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__(loss_weight, eps)

    def prob_projections(self, mask_logits: Tensor) -> Tuple[Tensor, Tensor]:
        """The max-projections of the logits, then the sigmoid: the sigmoid is
        monotonic, so these equal the max-projections of the probabilities,
        without a sigmoid (and its backward) over the whole (N, H, W) map."""
        return mask_logits.amax(1).sigmoid(), mask_logits.amax(2).sigmoid()


@MODELS.register_module()
class AvgProjLoss(_ProjLoss):
    """Dice of the mean-projections along H (-> (N, W)) plus along W
    (-> (N, H)) of the mask probabilities (not logits) and the coarse masks.

    Args:
        loss_weight (float): Weight of the loss (alpha in the paper).
            Defaults to 0.1.
        eps (float): Dice denominator smoothing. Defaults to 1e-5.
    """

    project = staticmethod(mean_projection)

    def __init__(self, loss_weight: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(loss_weight, eps)
