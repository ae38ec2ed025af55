"""Masks split into their connected components (Free Mask's ``split_components``)."""
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS

from freesolo_mmdet.free_mask.components import split_components
from test_free_mask_refine import generator_result


def pieces_mask():
    """(3, 12, 12): a 6x6 block (36 px), a 10x5 block (50 px) and a 2x2 speck; two 3x3 squares that touch at
    a corner only (8-connected: one piece); an empty mask."""
    masks = np.zeros((3, 12, 12), bool)
    masks[0, 0:6, 0:6] = True
    masks[0, 2:12, 7:12] = True
    masks[0, 10:12, 0:2] = True
    masks[1, 0:3, 0:3] = True
    masks[1, 3:6, 3:6] = True
    return masks


def test_pieces_at_least_the_share_of_the_largest_largest_first():
    masks = pieces_mask()
    sources, pieces = split_components(masks, 0.1)  # >= 5 px: both blocks, not the speck
    assert sources.tolist() == [0, 0, 1]
    assert [int(p.sum()) for p in pieces] == [50, 36, 18]
    assert pieces[0][2:12, 7:12].all() and pieces[1][0:6, 0:6].all()
    assert np.array_equal(pieces[2], masks[1])  # one 8-connected piece: the mask itself
    assert [int(p.sum()) for p in split_components(masks, 0.0)[1]] == [50, 36, 4, 18]
    assert [int(p.sum()) for p in split_components(masks, 0.8)[1]] == [50, 18]  # 36 < 40
    assert [int(p.sum()) for p in split_components(masks, 1.0)[1]] == [50, 18]
    sources, pieces = split_components(np.zeros((2, 5, 7), bool), 0.1)
    assert sources.shape == (0, ) and pieces.shape == (0, 5, 7)
    with pytest.raises(ValueError, match='min_fraction'):
        split_components(masks, 1.5)


def test_generator_splits_one_mask_over_two_objects(tmp_path):
    """Two red squares in neighbouring grid cells on grey: one feature-cell query takes both into one mask;
    after refinement it is two pieces, and split_components makes each a mask with the parent's score."""
    img = np.full((128, 192, 3), 110, np.uint8)
    img[40:60, 70:90] = (30, 30, 220)
    img[70:90, 102:122] = (30, 30, 220)
    squares = torch.zeros(2, 128, 192, dtype=torch.bool)
    squares[0, 40:60, 70:90] = True
    squares[1, 70:90, 102:122] = True
    found = {split: generator_result(tmp_path, img, refine_iters=3, split_components=split) for split in (None, 0.1)}

    def best_ious(result):
        return [max(((m & s).sum() / (m | s).sum()).item() for m in result.masks) for s in squares]

    both = [m for m in found[None].masks if (m & squares[0]).any() and (m & squares[1]).any()]
    assert both and max(best_ious(found[None])) < 0.6  # one mask covers the two squares
    assert min(best_ious(found[0.1])) > 0.95
    pairs = [(i, j) for i in range(len(found[0.1])) for j in range(len(found[0.1])) if i < j]
    assert any(found[0.1].scores[i] == found[0.1].scores[j] for i, j in pairs)  # the parent's score, shared
    with pytest.raises(ValueError, match='split_components'):
        MODELS.build(dict(type='FreeMaskGenerator', backbone=dict(type='AvgPool32Backbone'), split_components=2))
