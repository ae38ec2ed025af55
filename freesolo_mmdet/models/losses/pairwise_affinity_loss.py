# Copyright (c) freesolo_mmdet contributors.
"""Pairwise affinity loss (BoxInst) as used by FreeSOLO on coarse masks."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub
from torch import Tensor

from mmdet.registry import MODELS

__all__ = ['PairwiseAffinityLoss']


@MODELS.register_module()
class PairwiseAffinityLoss(nn.Module):
    """Neighbouring pixels of similar colour should share a label.

    For every pixel i and each of its 8 neighbours j (3x3 window at dilation
    2, in the order of :func:`mmdet.models.utils.unfold_wo_center`) the loss
    is ``-log(p_i p_j + (1 - p_i)(1 - p_j))``, computed in log space as
    ``softplus(x_i) + softplus(x_j) - softplus(x_i + x_j)`` of the logits x.
    A pair counts with weight ``(color_similarity >= color_threshold) *
    box(t)_i``, evaluated at the centre pixel i and broadcast over the 8
    neighbours, where ``box(t)`` (H, W) of the coarse mask ``t`` is, by
    ``box_mode``:

    * ``'projection'`` (default, spec section 2 and the authors' release):
      the outer product of its max-projections,
      ``max_rows(t)[:, None] * max_cols(t)[None, :]``: the rows and columns
      that the mask occupies. For a mask of several blobs whose projections
      have gaps, the empty rows and columns between them are excluded (two
      diagonal blobs give four blocks, not the box around both).
    * ``'filled'``: the filled bounding box of ``t`` (BoxInst's box, which
      also covers those gaps).

    Both are the same for a mask whose projections have no gaps. Pairs whose
    neighbour lies outside
    the (H, W) map do not exist and carry no weight (the colour similarity of
    ``FreeSOLODataPreprocessor`` is 0 there anyway). The result is the
    *global* weighted mean over all instances, pixels and neighbours of the
    batch (sum of weighted losses / sum of weights, the latter clamped at
    >= 1), times ``loss_weight`` and the warm-up factor
    ``min(iter / warmup_iters, 1)``. ``iter`` is the runner's iteration from
    mmengine's current ``MessageHub`` (info ``'iter'``, set by
    ``RuntimeInfoHook``); it is 0 outside a runner, which makes the loss 0
    unless ``warmup_iters`` is 0.

    Only centres inside a box carry weight, so the loss is computed on
    per-instance windows of the largest filled box's size (plus the
    neighbourhood's reach) instead of the whole map: its cost scales with the
    boxes' area. In ``'projection'`` mode the weight inside a window is read
    from the mask's projections.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        color_threshold (float): Minimum colour similarity of a pair to be
            used. Defaults to 0.3.
        kernel_size (int): Neighbourhood window size. Defaults to 3.
        dilation (int): Neighbourhood dilation. Defaults to 2.
        warmup_iters (int): Iterations of the linear warm-up from 0.
            Defaults to 1000.
        box_mode (str): ``'projection'`` or ``'filled'``, see above.
            Defaults to ``'projection'``.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 color_threshold: float = 0.3,
                 kernel_size: int = 3,
                 dilation: int = 2,
                 warmup_iters: int = 1000,
                 box_mode: str = 'projection') -> None:
        super().__init__()
        if warmup_iters < 0:
            raise ValueError(f'warmup_iters must be >= 0, got {warmup_iters}')
        if box_mode not in ('projection', 'filled'):
            raise ValueError("box_mode must be 'projection' or 'filled', "
                             f'got {box_mode!r}')
        self.box_mode = box_mode
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

    def forward(self,
                mask_logits: Tensor,
                targets: Tensor,
                color_similarity: Tensor,
                img_inds: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            mask_logits (Tensor): (N, H, W) mask logits.
            targets (Tensor): (N, H, W) binary coarse masks (float or bool).
            color_similarity (Tensor): (N, K*K-1, H, W) colour similarity of
                each pixel to its neighbours, of the image of each instance;
                or (B, K*K-1, H, W), one per image, when ``img_inds`` is given.
            img_inds (Tensor, optional): (N,) index into ``color_similarity``
                of each instance's image. Saves the (N, K*K-1, H, W) copy.

        Returns:
            Tensor: scalar loss; a graph-connected zero when N == 0.
        """
        num_neighbours = self.kernel_size**2 - 1
        n, h, w = mask_logits.shape
        num_sims = n if img_inds is None else color_similarity.shape[0]
        if targets.shape != mask_logits.shape or \
                color_similarity.shape != (num_sims, num_neighbours, h, w) or \
                (img_inds is not None and img_inds.shape != (n, )):
            raise ValueError(
                f'expected targets {(n, h, w)} and color_similarity '
                f'{(num_sims, num_neighbours, h, w)}'
                f'{"" if img_inds is None else f" and img_inds {(n, )}"}, '
                f'got {tuple(targets.shape)} and '
                f'{tuple(color_similarity.shape)}'
                f'{"" if img_inds is None else f" and {tuple(img_inds.shape)}"}')
        zero = mask_logits.sum() * 0
        rows, cols = targets.amax(dim=2) > 0, targets.amax(dim=1) > 0
        has_box = rows.any(dim=1)
        if not has_box.any():
            return zero
        if img_inds is None:
            img_inds = torch.arange(n, device=mask_logits.device)

        # Only centres inside the box carry weight: work on windows of the
        # size of the largest box, plus the neighbourhood's reach on each side.
        y0, x0 = rows.int().argmax(dim=1), cols.int().argmax(dim=1)
        y1 = h - 1 - rows.flip(1).int().argmax(dim=1)
        x1 = w - 1 - cols.flip(1).int().argmax(dim=1)
        win_h = int((y1 - y0 + 1)[has_box].max())
        win_w = int((x1 - x0 + 1)[has_box].max())
        reach = self.dilation * (self.kernel_size // 2)
        ys = y0[:, None] - reach + torch.arange(
            win_h + 2 * reach, device=y0.device)  # (N, win_h + 2 reach)
        xs = x0[:, None] - reach + torch.arange(
            win_w + 2 * reach, device=x0.device)  # (N, win_w + 2 reach)
        in_map = ((ys >= 0) & (ys < h))[:, :, None] & \
            ((xs >= 0) & (xs < w))[:, None, :]
        centre = (slice(None), slice(reach, reach + win_h),
                  slice(reach, reach + win_w))
        # unclamped coordinates: window cells past the map's edge must not
        # repeat its last row or column
        box_ys, box_xs = ys[:, reach:reach + win_h], xs[:, reach:reach + win_w]
        if self.box_mode == 'filled':
            box_rows, box_cols = box_ys <= y1[:, None], box_xs <= x1[:, None]
        else:  # the rows and columns the mask occupies
            box_rows = rows.gather(1, box_ys.clamp(max=h - 1)) & (box_ys < h)
            box_cols = cols.gather(1, box_xs.clamp(max=w - 1)) & (box_xs < w)
        in_box = box_rows[:, :, None] & box_cols[:, None, :] & \
            has_box[:, None, None]
        ys, xs = ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None]
        patch = mask_logits[torch.arange(n, device=ys.device)[:, None, None],
                            ys, xs]
        softplus_patch = F.softplus(patch)
        centre_ys, centre_xs = ys[:, reach:reach + win_h], \
            xs[:, :, reach:reach + win_w]
        similar = color_similarity >= self.color_threshold  # (N|B, 8, H, W)
        # (N, win_h, win_w, 8)
        similar = similar[img_inds[:, None, None], :, centre_ys, centre_xs]

        # -log(p_i p_j + (1 - p_i)(1 - p_j))
        #   = softplus(x_i) + softplus(x_j) - softplus(x_i + x_j)
        offsets = [(dy, dx)
                   for dy in range(-reach, reach + 1, self.dilation)
                   for dx in range(-reach, reach + 1, self.dilation)
                   if dy or dx]  # unfold_wo_center's order
        loss_sum, weight_sum = zero, 0
        for k, (dy, dx) in enumerate(offsets):
            neighbour = (slice(None), slice(reach + dy, reach + dy + win_h),
                         slice(reach + dx, reach + dx + win_w))
            pair_loss = softplus_patch[centre] + softplus_patch[neighbour] - \
                F.softplus(patch[centre] + patch[neighbour])
            weight = similar[..., k] & in_box & in_map[neighbour]
            loss_sum = loss_sum + (pair_loss * weight).sum()
            weight_sum = weight_sum + weight.sum()
        loss = loss_sum / weight_sum.clamp(min=1).to(mask_logits.dtype)
        return loss * self.loss_weight * self.warmup_factor
