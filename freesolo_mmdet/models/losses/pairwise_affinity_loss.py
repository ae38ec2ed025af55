# Copyright (c) freesolo_mmdet contributors.
"""Pairwise affinity loss (BoxInst) as used by FreeSOLO on coarse masks."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub
from torch import Tensor

from mmdet.models.utils import unfold_wo_center
from mmdet.registry import MODELS

__all__ = ['PairwiseAffinityLoss']


@MODELS.register_module()
class PairwiseAffinityLoss(nn.Module):
    """Neighbouring pixels of similar colour should share a label.

    For every pixel i and each of its 8 neighbours j (3x3 window at dilation
    2, in the order of :func:`mmdet.models.utils.unfold_wo_center`) the loss
    is ``-log(p_i p_j + (1 - p_i)(1 - p_j))``, computed in log space from
    ``logsigmoid``. A pair counts with weight
    ``(color_similarity >= color_threshold) * box(t)_i``, where ``box(t)`` is
    the bounding box of the coarse mask ``t`` (outer product of its two
    max-projections), evaluated at the centre pixel i and broadcast over the
    8 neighbours. The result is the *global* weighted mean over all
    instances, pixels and neighbours of the batch (sum of weighted losses /
    sum of weights, the latter clamped at >= 1), times ``loss_weight`` and
    the warm-up factor ``min(iter / warmup_iters, 1)``. ``iter`` is the
    runner's iteration from mmengine's current ``MessageHub`` (info
    ``'iter'``, set by ``RuntimeInfoHook``); it is 0 outside a runner, which
    makes the loss 0 unless ``warmup_iters`` is 0.

    Neighbours outside the (N, H, W) map contribute zero loss (their unfolded
    log-probabilities are 0); the colour similarity computed by
    ``FreeSOLODataPreprocessor`` is also 0 there, so they carry no weight.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        color_threshold (float): Minimum colour similarity of a pair to be
            used. Defaults to 0.3.
        kernel_size (int): Neighbourhood window size. Defaults to 3.
        dilation (int): Neighbourhood dilation. Defaults to 2.
        warmup_iters (int): Iterations of the linear warm-up from 0.
            Defaults to 1000.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 color_threshold: float = 0.3,
                 kernel_size: int = 3,
                 dilation: int = 2,
                 warmup_iters: int = 1000) -> None:
        super().__init__()
        if warmup_iters < 0:
            raise ValueError(f'warmup_iters must be >= 0, got {warmup_iters}')
        self.loss_weight = loss_weight
        self.color_threshold = color_threshold
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.warmup_iters = warmup_iters

    @property
    def warmup_factor(self) -> float:
        """``min(iter / warmup_iters, 1)`` from the current MessageHub."""
        if self.warmup_iters == 0:
            return 1.0
        cur_iter = MessageHub.get_current_instance().get_info('iter', 0)
        return min(cur_iter / self.warmup_iters, 1.0)

    def forward(self, mask_logits: Tensor, targets: Tensor,
                color_similarity: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            mask_logits (Tensor): (N, H, W) mask logits.
            targets (Tensor): (N, H, W) binary coarse masks (float or bool).
            color_similarity (Tensor): (N, K*K-1, H, W) colour similarity of
                each pixel to its neighbours, of the image of each instance.

        Returns:
            Tensor: scalar loss; a graph-connected zero when N == 0.
        """
        num_neighbours = self.kernel_size**2 - 1
        n, h, w = mask_logits.shape
        if targets.shape != mask_logits.shape or \
                color_similarity.shape != (n, num_neighbours, h, w):
            raise ValueError(
                f'expected targets {(n, h, w)} and color_similarity '
                f'{(n, num_neighbours, h, w)}, got {tuple(targets.shape)} '
                f'and {tuple(color_similarity.shape)}')
        if n == 0:
            return mask_logits.sum() * 0

        logits = mask_logits[:, None]  # (N, 1, H, W)
        log_fg = F.logsigmoid(logits)
        log_bg = F.logsigmoid(-logits)
        neighbour_log_fg = unfold_wo_center(log_fg, self.kernel_size,
                                            self.dilation)[:, 0]
        neighbour_log_bg = unfold_wo_center(log_bg, self.kernel_size,
                                            self.dilation)[:, 0]
        # log(p_i p_j + (1 - p_i)(1 - p_j)): (N, K*K-1, H, W)
        log_same = torch.logaddexp(log_fg + neighbour_log_fg,
                                   log_bg + neighbour_log_bg)

        targets = targets.to(mask_logits.dtype)
        box = targets.amax(dim=2)[:, :, None] * targets.amax(dim=1)[:, None]
        weight = (color_similarity >= self.color_threshold).to(
            mask_logits.dtype) * box[:, None]
        loss = -(log_same * weight).sum() / weight.sum().clamp(min=1.0)
        return loss * self.loss_weight * self.warmup_factor
