"""Free Mask generator: each step against hand-computed numbers, and the image path's geometry."""
import math

import cv2
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

from freesolo_mmdet.free_mask.generator import (FreeMaskGenerator, maskness, pyramid_queries, soft_masks,
                                                valid_feature_region)

NO_FILTERS = dict(sky_filter=None, width_filter=None, min_score=None)


def two_cluster_features(channels: int = 16) -> torch.Tensor:
    """8x8 map: background e0, cluster e1 at rows 1-3 / cols 1-3, cluster e2 at rows 5-6 / cols 4-7."""
    feat = torch.zeros(channels, 8, 8)
    feat[0] = 1
    feat[:, 1:4, 1:4] = 0
    feat[1, 1:4, 1:4] = 1
    feat[:, 5:7, 4:8] = 0
    feat[2, 5:7, 4:8] = 1
    return feat


def cell_mask(rows: slice, cols: slice, cell: int = 4, size=(32, 32)) -> torch.Tensor:
    """Bilinear x``cell`` upsampling of a block of feature cells, thresholded at 0.5: the block's pixels
    less its corner pixels inside the image (there the value is 0.625 * 0.625 < 0.5)."""
    mask = torch.zeros(size, dtype=torch.bool)
    top, bottom, left, right = rows.start * cell, rows.stop * cell, cols.start * cell, cols.stop * cell
    mask[top:bottom, left:right] = True
    for y, y_inside in ((top, top > 0), (bottom - 1, bottom < size[0])):
        for x, x_inside in ((left, left > 0), (right - 1, right < size[1])):
            mask[y, x] = not (y_inside and x_inside)
    return mask


def test_pyramid_queries_count_and_values():
    feat = torch.arange(2 * 8 * 12, dtype=torch.float).view(2, 8, 12)
    queries = pyramid_queries(feat, (1.0, 0.5, 0.25))
    assert queries.shape == (8 * 12 + 4 * 6 + 2 * 3, 2)
    assert torch.equal(queries[:96], feat.flatten(1).t())  # scale 1: every location, row-major
    # a map constant on 2x2 blocks halves exactly to the block values
    blocks = torch.arange(4 * 6, dtype=torch.float).view(1, 4, 6)
    fine = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.allclose(pyramid_queries(fine, (0.5, ))[:, 0], blocks.flatten())
    assert len(pyramid_queries(torch.zeros(3, 2, 2), (0.25, ))) == 1  # at least one query per level


def test_soft_masks_cosine_and_min_max():
    keys = torch.tensor([[1., 0., 1.], [0., 1., 1.]]).view(2, 1, 3)  # pixels (1,0), (0,1), (1,1)
    soft = soft_masks(torch.tensor([[5., 0.], [1., 1.], [1., -1.]]), keys)
    assert soft.shape == (3, 1, 3)
    # cosines (1, 0, .707) / (.707, .707, 1) / (.707, -.707, 0), each stretched to [0, 1]
    expected = torch.tensor([[1., 0., 1 / math.sqrt(2)], [0., 0., 1.], [1., 0., 0.5]])
    assert torch.allclose(soft.view(3, 3), expected, atol=1e-6)
    assert torch.equal(soft_masks(torch.ones(1, 2), torch.ones(2, 2, 2)), torch.zeros(1, 2, 2))


def test_maskness_is_mean_soft_value_over_foreground():
    soft = torch.tensor([[[0.2, 0.6], [0.9, 1.0]], [[0.1, 0.2], [0.3, 0.4]]])
    assert torch.allclose(maskness(soft, soft >= 0.5), torch.tensor([(0.6 + 0.9 + 1.0) / 3, 0.0]))


def test_two_clusters_give_the_two_masks():
    results = FreeMaskGenerator().masks_from_features(two_cluster_features(), (32, 32))
    # background is full-width (width filter); duplicates decay below 0.7; pyramid blends score < 0.7
    assert len(results) == 2
    expected = [cell_mask(slice(1, 4), slice(1, 4)), cell_mask(slice(5, 7), slice(4, 8))]
    assert sorted(int(results.masks[i].sum()) for i in range(2)) == [8 * 16 - 2, 12 * 12 - 4]
    for mask in expected:
        assert any(torch.equal(mask, found) for found in results.masks)
    assert torch.allclose(results.scores, torch.ones(2))
    assert results.embs.shape == (2, 128) and torch.equal(results.labels, torch.zeros(2, dtype=torch.long))


def test_matrix_nms_decays_duplicates():
    generator = FreeMaskGenerator(top_k=1000, **NO_FILTERS)
    results = generator.masks_from_features(two_cluster_features(), (32, 32))
    cluster = cell_mask(slice(1, 4), slice(1, 4))
    scores = results.scores[torch.tensor([torch.equal(m, cluster) for m in results.masks])]
    # 9 identical masks from scale 1 (plus pure ones from coarser levels): one keeps maskness 1,
    # the others decay by exp(-sigma * IoU^2) = exp(-2)
    assert len(scores) >= 9 and scores[0] == 1
    assert torch.allclose(scores[1:], torch.full_like(scores[1:], math.exp(-2)))
    assert len(FreeMaskGenerator(top_k=3, **NO_FILTERS).masks_from_features(two_cluster_features(), (32, 32))) == 3


def test_filters_each_switchable():
    masks = torch.zeros(5, 10, 20, dtype=torch.bool)
    masks[0, 0:2, 5:9] = True  # sky: mean occupied row 0.5 <= 0.2 * 10
    masks[1, 5:7, :] = True  # full width: 20 >= 0.95 * 20
    masks[2, 5:8, 3:7] = True  # low score
    masks[3, 5:8, 10:15] = True  # passes everything
    results = InstanceData(masks=masks, scores=torch.tensor([0.9, 0.9, 0.5, 0.9, 0.9]))  # 4: empty

    def keep(**filters):
        return FreeMaskGenerator(**{**NO_FILTERS, **filters}).filter_masks(results).tolist()

    assert keep() == [True, True, True, True, False]
    assert keep(sky_filter=0.2) == [False, True, True, True, False]
    assert keep(width_filter=0.95) == [True, False, True, True, False]
    assert keep(min_score=0.7) == [True, True, False, True, False]
    assert FreeMaskGenerator().filter_masks(results).tolist() == [False, False, False, True, False]


def test_sky_filter_is_the_strict_mean_of_the_occupied_rows():
    """Spec 1.9: the mean of the indices of the rows a mask occupies, each once, must exceed sky_filter * H."""
    masks = torch.zeros(4, 12, 10, dtype=torch.bool)  # threshold 0.25 * 12 = 3 (exact in binary)
    masks[0, [0, 1, 2], 0] = True
    masks[0, 8] = True  # occupied rows 0, 1, 2, 8: mean 2.75, dropped (pixel centroid 83 / 13 = 6.4)
    masks[1, 0:2] = True
    masks[1, 11, 0] = True  # occupied rows 0, 1, 11: mean 4, kept (pixel centroid 21 / 21 = 1)
    masks[2, 2:5, 3:6] = True  # occupied rows 2, 3, 4: mean exactly 3, dropped (not strictly greater)
    masks[3, [2, 3, 5], 4] = True  # occupied rows 2, 3, 5: mean 3.33, kept
    results = InstanceData(masks=masks, scores=torch.ones(4))
    assert FreeMaskGenerator(**{**NO_FILTERS, 'sky_filter': 0.25}).filter_masks(results).tolist() == [
        False, True, False, True]
    # the same decisions where the masks are made (upsample_and_filter): identity resize, thresholded at 0.5
    generator = FreeMaskGenerator(**{**NO_FILTERS, 'sky_filter': 0.25})
    keep, kept = generator.upsample_and_filter(masks.float(), torch.ones(4), (12, 10))
    assert keep.tolist() == [False, True, False, True] and torch.equal(kept, masks[[1, 3]])


@pytest.mark.parametrize('filters', [NO_FILTERS, dict(sky_filter=0.3, width_filter=0.8, min_score=0.5)])
def test_upsample_and_filter_equals_resizing_all_masks_at_once(filters):
    """Mask by mask into one buffer, failing masks overwritten: bit-for-bit the masks of one batched resize."""
    torch.manual_seed(0)
    soft = torch.rand(12, 7, 9) * 0.4  # noise below mask_thr, plus a random rectangle above it
    for mask, (top, left), (height, width) in zip(soft, torch.randint(0, 5, (12, 2)), torch.randint(1, 7, (12, 2))):
        mask[top:top + height, left:left + width] += 0.5
    soft[3] = 0  # empty at full resolution
    scores = torch.rand(12)
    generator = FreeMaskGenerator(**filters)
    for ori_shape, fraction in (((70, 90), (1.0, 1.0)), ((61, 83), (61 / 70, 83 / 90))):
        size = (math.ceil(ori_shape[0] / fraction[0] - 1e-6), math.ceil(ori_shape[1] / fraction[1] - 1e-6))
        resized = nn.functional.interpolate(soft[None], size=size, mode='bilinear')[0]
        resized = resized[:, :ori_shape[0], :ori_shape[1]]
        reference = InstanceData(masks=resized >= 0.5, scores=scores)
        expected_keep = generator.filter_masks(reference)
        keep, masks = generator.upsample_and_filter(soft, scores, ori_shape, fraction)
        assert torch.equal(keep, expected_keep) and torch.equal(masks, reference.masks[expected_keep])
        assert len(masks) == 11 if filters is NO_FILTERS else 0 < len(masks) < 11
        assert not keep[3] and keep[4:].any()  # a failed mask's slot is reused
    keep, masks = generator.upsample_and_filter(soft[:0], scores[:0], (20, 30))
    assert keep.shape == (0, ) and masks.shape == (0, 20, 30)


def test_embedding_reduction_along_channels():
    queries = torch.tensor([[1., 2., 3., 4.]])
    assert torch.allclose(FreeMaskGenerator(emb_dim=2).embed(queries), torch.tensor([[1.5, 3.5]]))
    assert torch.equal(FreeMaskGenerator(emb_dim=None).embed(queries), queries)
    results = FreeMaskGenerator(emb_dim=16).masks_from_features(two_cluster_features(), (32, 32))
    assert {tuple(e.nonzero().flatten().tolist()) for e in results.embs} == {(1, ), (2, )}  # = unit queries


def test_no_surviving_mask_gives_empty_result():
    results = FreeMaskGenerator().masks_from_features(torch.ones(8, 4, 4), (20, 30))
    assert results.masks.shape == (0, 20, 30) and results.embs.shape == (0, 128) and len(results.scores) == 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='nms_kernel'):
        FreeMaskGenerator(nms_kernel='box')
    with pytest.raises(ValueError, match='query_scales'):
        FreeMaskGenerator(query_scales=(1.0, 0.0))
    with pytest.raises(ValueError, match='predict'):
        FreeMaskGenerator()(torch.zeros(1, 3, 32, 32), mode='loss')
    with pytest.raises(RuntimeError, match='backbone'):
        FreeMaskGenerator().predict(torch.zeros(1, 3, 32, 32))


def test_valid_feature_region():
    assert valid_feature_region((128, 192), (160, 192), (5, 6)) == ((4, 6), (1.0, 1.0))
    assert valid_feature_region((148, 190), (160, 192), (5, 6)) == ((5, 6), (148 / 160, 190 / 192))


@MODELS.register_module(name='AvgPool32Backbone', force=True)
class AvgPool32Backbone(nn.Module):
    """Mean colour of every 32x32 cell: a backbone whose features are local, so padding cannot leak."""

    def forward(self, inputs: torch.Tensor) -> tuple:
        return (nn.functional.avg_pool2d(inputs, 32), )


def test_image_path_batch_padding_and_resize(tmp_path):
    init_default_scope('mmdet')
    model = MODELS.build(dict(
        type='FreeMaskGenerator',
        backbone=dict(type='AvgPool32Backbone'),
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)))
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(192, 192), keep_ratio=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))])
    # image 1: 256x384 -> 128x192 (scale 0.5); object = feature cells rows 1-2, cols 2-4
    # image 2: 296x384 -> 148x192, padded to 160 rows by the preprocessor; object = cells rows 1-2, cols 1-3;
    # its last cell row is 20 image rows + 12 padding rows (zeros after normalisation: the same direction)
    boxes = [(256, 384, 64, 192, 128, 320), (296, 384, 64, 192, 64, 256)]
    cells = [((4, 6), (256, 384), (slice(1, 3), slice(2, 5))), ((5, 6), (320, 384), (slice(1, 3), slice(1, 4)))]
    data = []
    for i, (h, w, y1, y2, x1, x2) in enumerate(boxes):
        img = np.full((h, w, 3), 110, np.uint8)
        img[y1:y2, x1:x2] = (30, 30, 220)  # red object on grey (BGR)
        cv2.imwrite(str(tmp_path / f'{i}.png'), img)
        data.append(pipeline(dict(img_path=str(tmp_path / f'{i}.png'), img_id=i)))
    batch = model.test_step(pseudo_collate(data))
    for result, (h, w, y1, y2, x1, x2), (grid, upsampled, (rows, cols)) in zip(batch, boxes, cells):
        # one mask (background is full-width, duplicates decay): the object's cells, resized bilinearly so
        # that the image part of the valid cells spans the original image, then thresholded
        indicator = torch.zeros(1, 1, *grid)
        indicator[..., rows, cols] = 1
        reference = nn.functional.interpolate(indicator, upsampled, mode='bilinear')[0, 0, :h] >= 0.5
        assert result.masks.shape == (1, h, w) and torch.equal(result.masks[0], reference)
        assert result.masks[0, :y1].sum() == result.masks[0, y2:].sum() == result.masks[0, :, x2:].sum() == 0
        assert result.masks[0].sum() > 0.9 * (y2 - y1) * (x2 - x1)  # less rounded corners
    for item, result in zip(data, batch):  # each image alone: no batch padding, same masks
        alone = model.test_step(pseudo_collate([item]))[0]
        assert torch.equal(alone.masks, result.masks) and torch.allclose(alone.scores, result.scores)


def test_input_pyramid_finds_an_object_only_the_finer_scale_resolves(tmp_path):
    """input_scales=(1.0, 2.0): a 64x64 object of a 256x384 image resized to 128x192 fills one stride-32
    cell at 1x (too small for a mask: a mask needs 2 cells) and 2x2 cells at 2x. The pyramid's mask is the
    2x level's cells resized onto the image; the spec's single scale has no mask on the object."""
    init_default_scope('mmdet')
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(192, 192), keep_ratio=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))])
    img = np.full((256, 384, 3), 110, np.uint8)
    img[64:128, 128:192] = (30, 30, 220)
    cv2.imwrite(str(tmp_path / 'small.png'), img)
    data = [pipeline(dict(img_path=str(tmp_path / 'small.png'), img_id=0))]
    indicator = torch.zeros(1, 1, 8, 12)
    indicator[..., 2:4, 4:6] = 1
    reference = nn.functional.interpolate(indicator, (256, 384), mode='bilinear')[0, 0] >= 0.5
    found = {}
    for scales in ((1.0, ), (1.0, 2.0)):
        model = MODELS.build(dict(
            type='FreeMaskGenerator', backbone=dict(type='AvgPool32Backbone'), input_scales=scales,
            data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)))
        found[scales] = model.test_step(pseudo_collate(data))[0]
    assert not any((mask & reference).sum() > 0.5 * reference.sum() for mask in found[(1.0, )].masks)
    assert len(found[(1.0, 2.0)]) == 1 and found[(1.0, 2.0)].scores[0] == pytest.approx(1.0)
    mask = found[(1.0, 2.0)].masks[0]
    # the 2x input is interpolated bilinearly, so the object's edge tints the neighbouring cells a little
    assert (mask & reference).sum() / (mask | reference).sum() > 0.95
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (63, 128, 127, 192)  # object: 64-127, 128-191


def test_levels_merge_candidates_of_every_scale_in_one_nms():
    """Coarse level (8x8): the two clusters. Fine level (16x16): the same clusters at twice the cells plus a
    2x2-cell cluster the coarse map does not have. Every object comes out once, from the level where its
    query is pure (maskness 1); one level alone on its own grid is masks_from_features."""
    coarse = two_cluster_features()
    fine = nn.functional.interpolate(coarse[None], scale_factor=2, mode='nearest')[0]
    fine[:, 12:14, 1:3] = 0
    fine[3, 12:14, 1:3] = 1
    generator = FreeMaskGenerator(**dict(NO_FILTERS, width_filter=0.95))
    merged = generator.masks_from_levels([coarse, fine], (32, 32), [(1.0, 1.0), (1.0, 1.0)])
    expected = []
    for rows, cols in ((slice(2, 8), slice(2, 8)), (slice(10, 14), slice(8, 16)), (slice(12, 14), slice(1, 3))):
        indicator = torch.zeros(1, 1, 16, 16)  # the fine level's cells (2x2 pixels each), resized bilinearly
        indicator[..., rows, cols] = 1
        expected.append(nn.functional.interpolate(indicator, (32, 32), mode='bilinear')[0, 0] >= 0.5)
    assert len(merged) == 3 and torch.allclose(merged.scores, torch.ones(3))
    for mask in expected:
        assert sum(torch.equal(mask, found) for found in merged.masks) == 1
    alone = generator.masks_from_levels([coarse], (32, 32), [(1.0, 1.0)])
    spec = generator.masks_from_features(coarse, (32, 32))
    assert torch.equal(alone.masks, spec.masks) and torch.equal(alone.scores, spec.scores)
    with pytest.raises(ValueError, match='input_scales'):
        FreeMaskGenerator(input_scales=(1.0, 0.0))
