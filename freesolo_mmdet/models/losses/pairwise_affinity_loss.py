# Copyright (c) freesolo_mmdet contributors.
"""Pairwise affinity loss (BoxInst) as used by FreeSOLO on coarse masks."""
import math
from typing import List, Optional, Tuple

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
    per-instance windows instead of the whole map: the instances are grouped
    by box size (heights and widths within a factor ``group_ratio``), and each
    group on windows of its largest filled box (plus the neighbourhood's
    reach). Its cost follows each box's area; grouping changes only the
    order of the sums. In ``'projection'`` mode the weight inside a window is
    read from the mask's projections.

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
        group_ratio (float, optional): Box heights (and widths) in one
            window group differ by less than this factor; None computes
            every instance on windows of the largest box. Defaults to 1.4.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 color_threshold: float = 0.3,
                 kernel_size: int = 3,
                 dilation: int = 2,
                 warmup_iters: int = 1000,
                 box_mode: str = 'projection',
                 group_ratio: Optional[float] = 1.4) -> None:
        super().__init__()
        if group_ratio is not None and group_ratio <= 1:
            raise ValueError(f'group_ratio must be > 1 or None, got {group_ratio}')
        self.group_ratio = group_ratio
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
        loss_sums, weight_sums = self.instance_sums(mask_logits, targets,
                                                    color_similarity, img_inds)
        loss = self.reduce(loss_sums, weight_sums)
        return loss if loss.requires_grad or not mask_logits.requires_grad \
            else loss + mask_logits.sum() * 0

    def reduce(self, loss_sums: Tensor, weight_sums: Tensor) -> Tensor:
        """The loss of a set of instances from their :meth:`instance_sums`:
        ``sum(loss_sums) / max(sum(weight_sums), 1)``, times ``loss_weight``
        and the warm-up factor.

        Args:
            loss_sums, weight_sums (Tensor): (N, ) each.

        Returns:
            Tensor: scalar.
        """
        loss = loss_sums.sum() / weight_sums.sum().clamp(min=1).to(loss_sums.dtype)
        return loss * self.loss_weight * self.warmup_factor

    def instance_sums(self,
                      mask_logits: Tensor,
                      targets: Tensor,
                      color_similarity: Tensor,
                      img_inds: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Each instance's sum of weighted pair losses and sum of weights, so
        that a caller can pool the instances of several calls (e.g. one per
        image) before :meth:`reduce`.

        Args:
            mask_logits, targets, color_similarity, img_inds: as
                :meth:`forward` takes them.

        Returns:
            tuple[Tensor, Tensor]: (N, ) weighted loss sums (in the logits'
            dtype) and (N, ) weight sums (long); 0 for an instance without
            a box.
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
        loss_sums = mask_logits.new_zeros(n)
        weight_sums = torch.zeros(n, dtype=torch.long, device=mask_logits.device)
        rows, cols = targets.amax(dim=2) > 0, targets.amax(dim=1) > 0
        has_box = rows.any(dim=1)
        if not has_box.any():
            return loss_sums, weight_sums
        if img_inds is None:
            img_inds = torch.arange(n, device=mask_logits.device)
        similar = color_similarity >= self.color_threshold  # (N|B, 8, H, W)
        y0, x0 = rows.int().argmax(dim=1), cols.int().argmax(dim=1)
        y1 = h - 1 - rows.flip(1).int().argmax(dim=1)
        x1 = w - 1 - cols.flip(1).int().argmax(dim=1)
        windows = [
            self._window(group, rows[group], cols[group], y0[group],
                         x0[group], y1[group], x1[group], h, w)
            for group in self._size_groups(y1 - y0 + 1, x1 - x0 + 1, has_box)
        ]
        # one gather of every group's window pixels (and one scatter in the
        # backward pass), split into per-group views
        flat = torch.cat([((window['inds'][:, None, None] * h + window['ys']) *
                           w + window['xs']).flatten() for window in windows])
        patches = mask_logits.flatten()[flat].split(
            [window['ys'].shape[0] * window['ys'].shape[1] *
             window['xs'].shape[2] for window in windows])
        group_sums = [
            self._window_sums(
                patch.view(len(window['inds']), window['ys'].shape[1],
                           window['xs'].shape[2]), window, similar,
                img_inds[window['inds']])
            for window, patch in zip(windows, patches)
        ]
        inds = torch.cat([window['inds'] for window in windows])
        loss_sums = loss_sums.index_put((inds, ), torch.cat([sums[0] for sums in group_sums]))
        weight_sums = weight_sums.index_put((inds, ), torch.cat([sums[1] for sums in group_sums]))
        return loss_sums, weight_sums

    def _size_groups(self, box_h: Tensor, box_w: Tensor,
                     has_box: Tensor) -> List[Tensor]:
        """Indexes of the instances with a box, grouped so that each group's
        box heights (and widths) are within a factor ``group_ratio`` of each
        other: one group per ``group_ratio``-fold band of height and of width.

        Each group is computed on windows of its largest box, so that the
        work follows each instance's own box instead of the largest box of
        the batch; with ``group_ratio=None`` all instances form one group.

        Args:
            box_h, box_w (Tensor): (N, ) filled box heights and widths.
            has_box (Tensor): (N, ) bool, the instances with a non-empty mask.

        Returns:
            list[Tensor]: long index tensors, together the instances with a box.
        """
        inds = has_box.nonzero()[:, 0]
        if self.group_ratio is None or len(inds) <= 1:
            return [inds]
        base = math.log(self.group_ratio)
        band_h = (box_h[inds].double().log() / base).floor().long()
        band_w = (box_w[inds].double().log() / base).floor().long()
        keys = band_h * (int(band_w.max()) + 1) + band_w
        return [inds[keys == key] for key in keys.unique()]

    def _window(self, inds: Tensor, rows: Tensor, cols: Tensor, y0: Tensor,
                x0: Tensor, y1: Tensor, x1: Tensor, h: int, w: int) -> dict:
        """The windows of a group of n instances that all have a box: the size
        of the group's largest box, plus the neighbourhood's reach each side.

        Args:
            inds (Tensor): (n, ) the instances, indexes into the mask logits.
            rows, cols (Tensor): (n, H) and (n, W) bool max-projections of the
                coarse masks.
            y0, x0, y1, x1 (Tensor): (n, ) inclusive box corners.
            h, w (int): H and W, the map's size.

        Returns:
            dict: ``inds``; ``ys`` (n, wh, 1) and ``xs`` (n, 1, ww) the map
            coordinates of the window cells, clamped to the map (wh, ww =
            window size plus twice the reach); ``in_map`` (n, wh, ww) whether
            a cell lies inside the map; ``in_box`` (n, wh - 2 reach,
            ww - 2 reach) whether a centre cell carries weight.
        """
        win_h, win_w = int((y1 - y0 + 1).max()), int((x1 - x0 + 1).max())
        reach = self.dilation * (self.kernel_size // 2)
        ys = y0[:, None] - reach + torch.arange(
            win_h + 2 * reach, device=y0.device)  # (n, win_h + 2 reach)
        xs = x0[:, None] - reach + torch.arange(
            win_w + 2 * reach, device=x0.device)  # (n, win_w + 2 reach)
        in_map = ((ys >= 0) & (ys < h))[:, :, None] & \
            ((xs >= 0) & (xs < w))[:, None, :]
        # unclamped coordinates: window cells past the map's edge must not
        # repeat its last row or column
        box_ys, box_xs = ys[:, reach:reach + win_h], xs[:, reach:reach + win_w]
        if self.box_mode == 'filled':
            box_rows, box_cols = box_ys <= y1[:, None], box_xs <= x1[:, None]
        else:  # the rows and columns the mask occupies
            box_rows = rows.gather(1, box_ys.clamp(max=h - 1)) & (box_ys < h)
            box_cols = cols.gather(1, box_xs.clamp(max=w - 1)) & (box_xs < w)
        return dict(
            inds=inds,
            ys=ys.clamp(0, h - 1)[:, :, None],
            xs=xs.clamp(0, w - 1)[:, None],
            in_map=in_map,
            in_box=box_rows[:, :, None] & box_cols[:, None, :])

    def _window_sums(self, patch: Tensor, window: dict, similar: Tensor,
                     img_inds: Tensor) -> Tuple[Tensor, Tensor]:
        """Weighted pair-loss sum and weight sum of one group's windows.

        Args:
            patch (Tensor): (n, wh, ww) the mask logits on the windows.
            window (dict): the group's windows, see :meth:`_window`.
            similar (Tensor): (N|B, 8, H, W) bool, colour similarity at or
                above the threshold.
            img_inds (Tensor): (n, ) index into ``similar`` of each instance.

        Returns:
            tuple[Tensor, Tensor]: (n, ) each instance's sum of weighted pair
            losses and (n, ) its sum of weights (long).
        """
        reach = self.dilation * (self.kernel_size // 2)
        n, win_h, win_w = patch.shape[0], patch.shape[1] - 2 * reach, patch.shape[2] - 2 * reach
        centre_pos = self.kernel_size**2 // 2  # the window's centre, which pairs with itself with weight 0

        def neighbourhoods(maps: Tensor) -> Tensor:
            """(n, wh, ww) -> (n, K*K, win_h * win_w): each centre cell's window, centre included."""
            return F.unfold(maps[:, None], self.kernel_size, dilation=self.dilation)

        # one unfold (and one fold in the backward pass) for all neighbours, not a slice per neighbour
        logits, softplus_logits = neighbourhoods(patch), neighbourhoods(F.softplus(patch))
        centre = slice(centre_pos, centre_pos + 1)
        # -log(p_i p_j + (1 - p_i)(1 - p_j))
        #   = softplus(x_i) + softplus(x_j) - softplus(x_i + x_j)
        pair_loss = softplus_logits[:, centre] + softplus_logits - F.softplus(logits[:, centre] + logits)
        # (n, 8, win_h * win_w) in unfold_wo_center's order, then a False for the centre
        similar = similar[img_inds[:, None, None], :, window['ys'][:, reach:reach + win_h],
                          window['xs'][:, :, reach:reach + win_w]].permute(0, 3, 1, 2).flatten(2)
        similar = torch.cat([similar[:, :centre_pos], similar.new_zeros(n, 1, similar.shape[2]),
                             similar[:, centre_pos:]], dim=1)
        in_map = neighbourhoods(window['in_map'].to(patch.dtype)) > 0
        weight = similar & window['in_box'].view(n, 1, -1) & in_map
        return (pair_loss * weight).sum((1, 2)), weight.sum((1, 2))
