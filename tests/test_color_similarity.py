"""Tests of rgb_to_lab, color_similarity and FreeSOLODataPreprocessor."""
import copy

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from freesolo_mmdet.models.data_preprocessors.color_similarity import (
    FreeSOLODataPreprocessor, color_similarity, rgb_to_lab)
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.testing import demo_mm_inputs

# (dy, dx) of the 8 neighbours, in the order of unfold_wo_center (k=3, d=2).
OFFSETS = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2)
           if (dy, dx) != (0, 0)]
IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
# two close RGB colours: similarity 0.059 across them, but 0.35 if the
# channels were swapped, so a wrong channel order shows
RED, ORANGE = (200, 30, 40), (200, 34, 30)


def np_similarity(rgb, valid):
    """Loop reference from skimage LAB; (8, H, W)."""
    lab = rgb2lab(rgb)
    h, w = valid.shape
    out = np.zeros((8, h, w))
    for k, (dy, dx) in enumerate(OFFSETS):
        for y in range(h):
            for x in range(w):
                j = (y + dy, x + dx)
                if 0 <= j[0] < h and 0 <= j[1] < w and valid[y, x] \
                        and valid[j]:
                    out[k, y,
                        x] = np.exp(-0.5 * np.linalg.norm(lab[y, x] - lab[j]))
    return out


def two_colour_rgb(h, w, split):
    """(h, w, 3) uint8 RGB: RED in columns < split, ORANGE from split on."""
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:, :split], rgb[:, split:] = RED, ORANGE
    return rgb


def test_rgb_to_lab_matches_skimage():
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 16, 16))
    rgb[:, 0, :8] = np.eye(3)[:, [0, 1, 2, 0, 1, 2, 0, 1]]  # primaries
    rgb[:, 1, :2] = [[0, 1]] * 3  # black, white
    expected = rgb2lab(rgb.transpose(1, 2, 0)).transpose(2, 0, 1)
    for dtype in (torch.float32, torch.float64):
        lab = rgb_to_lab(torch.tensor(rgb[None], dtype=dtype))[0]
        np.testing.assert_allclose(lab.numpy(), expected, atol=1e-3)


def test_color_similarity_two_colours():
    rgb = two_colour_rgb(4, 6, split=3)
    lab = rgb_to_lab(torch.from_numpy(rgb / 255.).permute(2, 0, 1)[None])
    sim = color_similarity(lab.float(), torch.ones(1, 4, 6))[0]
    delta_e = np.linalg.norm(
        rgb2lab(np.array([[RED]], np.uint8)) -
        rgb2lab(np.array([[ORANGE]], np.uint8)))
    assert delta_e == pytest.approx(5.648, abs=1e-3)
    right = OFFSETS.index((0, 2))
    assert sim[right, 1, 0].item() == pytest.approx(1.0)  # red - red
    assert sim[right, 1, 1].item() == pytest.approx(  # red - orange
        np.exp(-0.5 * delta_e), rel=1e-4)
    assert sim[right, 1, 4].item() == 0  # neighbour outside the image
    np.testing.assert_allclose(
        sim.numpy(), np_similarity(rgb, np.ones((4, 6), bool)), atol=1e-6)


def make_batch():
    """Two BGR uint8 two-colour images with hand-chosen shapes.

    Image 0: 32x40 resized from 64x80, so int(10 * 32 / 64) = 5 bottom rows
    are removed. Image 1: 24x32 not resized, 10 rows removed.
    """
    images, samples = [], []
    for (h, w), ori_shape in [((32, 40), (64, 80)), ((24, 32), (24, 32))]:
        bgr = two_colour_rgb(h, w, split=w // 2)[..., ::-1]
        images.append(torch.from_numpy(bgr.copy()).permute(2, 0, 1))
        samples.append(
            DetDataSample(
                metainfo=dict(img_shape=(h, w), ori_shape=ori_shape)))
    return dict(inputs=images, data_samples=samples)


@pytest.mark.parametrize(
    'config',
    [
        dict(bgr_to_rgb=True, **IMAGENET),
        dict(
            bgr_to_rgb=False,
            mean=[103.53, 116.28, 123.675],
            std=[57.375, 57.12, 58.395]),
        dict(),  # no normalisation, images stay BGR
    ])
def test_preprocessor_values_padding_and_bottom_rows(config):
    preprocessor = MODELS.build(
        dict(type='FreeSOLODataPreprocessor', pad_size_divisor=8, **config))
    out = preprocessor(make_batch(), training=True)
    assert out['inputs'].shape == (2, 3, 32, 40)
    # valid stride cells: sampled pixel 4r + 2 inside the kept rows/columns
    # image 0: 27 kept rows -> cells 0-6 of 8, all 10 columns;
    # image 1: 14 kept rows -> cells 0-2, 32 columns -> cells 0-7.
    for sample, (rows, cols), (h, w) in zip(out['data_samples'], [(7, 10),
                                                                  (3, 8)],
                                            [(32, 40), (24, 32)]):
        sim = sample.color_similarity
        assert sim.shape == (8, 8, 10) and sim.dtype == torch.float32
        valid = np.zeros((8, 10), bool)
        valid[:rows, :cols] = True
        # stride-level colours: each 4x4 cell is one colour (split at w/2)
        rgb = two_colour_rgb(8, 10, split=w // 8)
        expected = np_similarity(rgb, valid)
        np.testing.assert_allclose(sim.numpy(), expected, rtol=1e-3, atol=1e-5)
        assert (sim[:, ~torch.from_numpy(valid)] == 0).all()
        assert (expected[:, :rows, :cols] > 0.99).any()  # not all zeros


def test_preprocessor_eval_adds_nothing():
    preprocessor = FreeSOLODataPreprocessor(pad_size_divisor=8)
    out = preprocessor(make_batch(), training=False)
    assert 'color_similarity' not in out['data_samples'][0]


def test_preprocessor_rejects_gray_images():
    preprocessor = FreeSOLODataPreprocessor()
    data = make_batch()
    data['inputs'] = [image[:1] for image in data['inputs']]
    with pytest.raises(ValueError, match='colour images'):
        preprocessor(data, training=True)


@pytest.mark.parametrize('pad_mask', [False, True])
def test_preprocessor_on_demo_inputs_keeps_masks(pad_mask):
    data = demo_mm_inputs(
        batch_size=2,
        image_shapes=[(3, 64, 80), (3, 48, 64)],
        num_items=[2, 3],
        num_classes=2,
        with_mask=True)
    config = dict(
        bgr_to_rgb=True, pad_size_divisor=32, pad_mask=pad_mask, **IMAGENET)
    expected = DetDataPreprocessor(**config)(copy.deepcopy(data), True)
    out = FreeSOLODataPreprocessor(**config)(data, True)
    assert out['inputs'].shape == (2, 3, 64, 96)
    torch.testing.assert_close(out['inputs'], expected['inputs'])
    for sample, ref in zip(out['data_samples'], expected['data_samples']):
        assert sample.color_similarity.shape == (8, 16, 24)
        assert sample.color_similarity.dtype == torch.float32
        assert sample.color_similarity.device == out['inputs'].device
        np.testing.assert_array_equal(sample.gt_instances.masks.masks,
                                      ref.gt_instances.masks.masks)
        assert sample.gt_instances.masks.masks.shape[1:] == ((
            64, 96) if pad_mask else sample.img_shape)
