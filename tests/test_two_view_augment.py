import colorsys
import copy
import math

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from freesolo_mmdet.models.data_preprocessors.two_view_augment import (
    TwoViewAugment, _clipped, _windows, adjust_hue, gaussian_blur, paste_masks)
from freesolo_mmdet.utils.mask_ops import tight_boxes
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmdet.testing import demo_mm_inputs

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
OFF = dict(jitter_prob=0, grayscale_prob=0, blur_prob=0, erasings=())


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(
        STD).view(-1, 1, 1)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    return image * torch.tensor(STD).view(-1, 1, 1) + torch.tensor(
        MEAN).view(-1, 1, 1)


def make_sample(img_shape, masks, scores, box_type=torch.Tensor):
    """A data sample with masks (n, H, W) and boxes tight around them."""
    masks = np.asarray(masks, dtype=np.uint8)
    boxes = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    boxes = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    sample = DetDataSample(metainfo=dict(img_shape=img_shape))
    sample.gt_instances = InstanceData(
        masks=BitmapMasks(masks, *masks.shape[1:]),
        bboxes=boxes if box_type is torch.Tensor else HorizontalBoxes(boxes),
        labels=torch.zeros(len(masks), dtype=torch.long),
        scores=torch.tensor(scores),
        embs=torch.arange(len(masks) * 4.).view(-1, 4) + 10 * scores[0])
    return sample


def random_batch(num_images=3, size=(24, 32), img_shape=(20, 28)):
    torch.manual_seed(1)
    inputs = normalize(torch.rand(num_images, 3, *size) * 255)
    samples = []
    for index in range(num_images):
        masks = np.zeros((2, *size), dtype=np.uint8)
        masks[0, 2 + 2 * index:8 + 2 * index, 3:9] = 1
        masks[1, 10:18, 12 + 5 * index:20 + 5 * index] = 1
        masks[:, img_shape[0]:] = masks[:, :, img_shape[1]:] = 0
        samples.append(make_sample(img_shape, masks, [0.9, 0.8]))
    return inputs, samples


def test_output_is_doubled_and_weak_half_is_unchanged():
    inputs, samples = random_batch()
    weak_inputs = inputs.clone()
    weak_masks = [torch.from_numpy(s.gt_instances.masks.masks).bool() for s in samples]
    torch.manual_seed(0)
    aug = TwoViewAugment(MEAN, STD, blur_prob=1, jitter_prob=1)
    out_inputs, out_samples = aug(inputs, samples)
    assert out_inputs.shape == (6, 3, 24, 32)
    assert len(out_samples) == 6
    assert torch.equal(out_inputs[:3], weak_inputs)
    assert torch.equal(inputs, weak_inputs)
    assert all(a is b for a, b in zip(out_samples[:3], samples))
    for sample, masks in zip(samples, weak_masks):  # as bool tensors from here on
        assert torch.equal(sample.gt_instances.masks, masks)
    assert all(s not in samples for s in out_samples[3:])
    # image i gets image (i + 1) % 3's objects: a first square covering 4/6
    # of i's is dropped (not for i = 2: 2/6), a bar covering 3/8 is pasted
    assert [len(s.gt_instances) for s in out_samples[3:]] == [3, 3, 4]
    for sample in out_samples[3:]:
        gt = sample.gt_instances
        assert len(gt.bboxes) == len(gt.scores) == len(gt.embs) == len(gt)
        assert gt.masks.dtype == torch.bool
        assert not gt.masks[:, 20:].any()
        assert not gt.masks[:, :, 28:].any()
        assert gt.bboxes[:, 2].max() <= 28
    assert not torch.allclose(out_inputs[3:, :, :20, :28],
                              weak_inputs[:, :, :20, :28])
    # padding (outside img_shape 20x28) is never touched
    assert torch.equal(out_inputs[3:, :, 20:], weak_inputs[:, :, 20:])
    assert torch.equal(out_inputs[3:, :, :, 28:], weak_inputs[:, :, :, 28:])


def test_all_off_strong_view_equals_weak_view():
    inputs, samples = random_batch()
    aug = TwoViewAugment(MEAN, STD, copy_paste=False, **OFF)
    out_inputs, out_samples = aug(inputs, samples)
    assert torch.equal(out_inputs[3:], inputs)
    for weak, strong in zip(samples, out_samples[3:]):
        assert torch.equal(strong.gt_instances.masks, weak.gt_instances.masks)
        assert torch.equal(strong.gt_instances.scores,
                           weak.gt_instances.scores)


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
def test_grayscale_is_itu_601_luma(bgr_to_rgb):
    inputs, samples = random_batch(num_images=2)
    aug = TwoViewAugment(
        MEAN, STD, bgr_to_rgb=bgr_to_rgb, copy_paste=False,
        **dict(OFF, grayscale_prob=1))
    out_inputs, _ = aug(inputs, samples)
    weak = denormalize(inputs[:, :, :20, :28])
    strong = denormalize(out_inputs[2:, :, :20, :28])
    first, _, last = weak.unbind(1)
    red, blue = (first, last) if bgr_to_rgb else (last, first)
    luma = 0.299 * red + 0.587 * weak[:, 1] + 0.114 * blue
    for channel in range(3):
        torch.testing.assert_close(strong[:, channel], luma, atol=1e-3,
                                   rtol=0)


def test_blur_keeps_a_constant_image_constant():
    inputs, samples = random_batch(num_images=2)
    inputs[:, :, :20, :28] = normalize(torch.full((3, 20, 28), 100.))
    aug = TwoViewAugment(
        MEAN, STD, copy_paste=False, **dict(OFF, blur_prob=1))
    torch.manual_seed(0)
    out_inputs, _ = aug(inputs, samples)
    torch.testing.assert_close(
        denormalize(out_inputs[2:, :, :20, :28]),
        torch.full((2, 3, 20, 28), 100.), atol=1e-3, rtol=0)
    assert torch.equal(out_inputs[2:, :, 20:], inputs[:, :, 20:])


def test_gaussian_blur_of_an_impulse_is_the_sampled_kernel():
    impulse = torch.zeros(1, 15, 15)
    impulse[0, 7, 7] = 1
    blurred = gaussian_blur(impulse, sigma=1.0)
    weights = [math.exp(-x**2 / 2) for x in range(-3, 4)]  # radius ceil(3)
    center = (weights[3] / sum(weights))**2
    assert blurred.shape == impulse.shape
    assert blurred[0, 7, 7].item() == pytest.approx(center, rel=1e-5)
    assert blurred.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert blurred[0, 7, 11].item() == 0  # beyond the radius of 3


def test_brightness_factor_is_applied_exactly_with_clipping():
    inputs, samples = random_batch(num_images=2)
    aug = TwoViewAugment(
        MEAN, STD, brightness=(1.5, 1.5), contrast=(1, 1),
        saturation=(1, 1), hue=(0, 0), copy_paste=False,
        **dict(OFF, jitter_prob=1))
    out_inputs, _ = aug(inputs, samples)
    expected = (denormalize(inputs[:, :, :20, :28]) * 1.5).clamp(0, 255)
    torch.testing.assert_close(
        denormalize(out_inputs[2:, :, :20, :28]), expected, atol=1e-3,
        rtol=0)
    assert (expected == 255).any() and (expected < 255).any()


def test_contrast_zero_gives_the_mean_luma_of_the_valid_region():
    inputs, samples = random_batch(num_images=1)
    inputs[:, :, 20:] = normalize(torch.full((3, 4, 32), 255.))  # padding
    aug = TwoViewAugment(
        MEAN, STD, brightness=(1, 1), contrast=(0, 0), saturation=(1, 1),
        hue=(0, 0), copy_paste=False, **dict(OFF, jitter_prob=1))
    out_inputs, _ = aug(inputs, samples)
    rgb = denormalize(inputs[0, :, :20, :28])
    mean_luma = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).mean()
    torch.testing.assert_close(
        denormalize(out_inputs[1, :, :20, :28]),
        mean_luma.expand(3, 20, 28), atol=1e-3, rtol=0)


def test_hue_rotation_in_hsv():
    red = torch.tensor([1., 0., 0.]).view(3, 1, 1)
    torch.testing.assert_close(adjust_hue(red, 1 / 3).flatten(),
                               torch.tensor([0., 1., 0.]))
    torch.testing.assert_close(adjust_hue(red, -1 / 3).flatten(),
                               torch.tensor([0., 0., 1.]))
    # against colorsys on random colours, ties of the maximum and grays included
    torch.manual_seed(0)
    colors = torch.cat((torch.rand(200, 3), torch.tensor([[0.5, 0.5, 0.2], [0.3, 0.6, 0.6], [0.4, 0.4, 0.4],
                                                          [0., 0., 0.], [1., 1., 1.]])))
    for shift in (-0.5, -0.13, 0.0, 0.07, 0.5):
        expected = []
        for color in colors.tolist():
            hue, saturation, value = colorsys.rgb_to_hsv(*color)
            expected.append(colorsys.hsv_to_rgb((hue + shift) % 1, saturation, value))
        out = adjust_hue(colors.T.reshape(3, 1, -1), shift)
        torch.testing.assert_close(out.reshape(3, -1).T, torch.tensor(expected), atol=1e-5, rtol=0)


def test_erasing_fills_one_rectangle_of_the_given_area_and_keeps_masks():
    inputs, samples = random_batch(num_images=1, size=(40, 40),
                                   img_shape=(40, 40))
    aug = TwoViewAugment(
        MEAN, STD, copy_paste=False,
        **dict(OFF, erasings=[(1.0, (0.1, 0.1), (1.0, 1.0))]))
    torch.manual_seed(0)
    out_inputs, out_samples = aug(inputs, samples)
    changed = ((out_inputs[1] - inputs[0]).abs() > 1e-3).any(dim=0)
    side = round(math.sqrt(0.1 * 40 * 40))  # 13
    rows, cols = changed.nonzero(as_tuple=True)
    assert changed.sum().item() == side * side
    assert rows.max() - rows.min() + 1 == side
    assert cols.max() - cols.min() + 1 == side
    erased = denormalize(out_inputs[1])[:, changed]
    assert erased.min() >= 0 and erased.max() <= 255
    assert torch.equal(out_samples[1].gt_instances.masks, samples[0].gt_instances.masks)


def test_paste_masks_drops_at_half_coverage():
    existing = torch.zeros(1, 10, 10, dtype=torch.bool)
    existing[0, :, :4] = True  # area 40
    half, below = torch.zeros(2, 10, 10, dtype=torch.bool)
    half[:5, :4] = True  # covers 20 / 40
    below[:, 3:8] = True  # covers 10 / 40
    masks, accepted, cut, areas, union, boxes = paste_masks(existing, torch.stack((half, below)))
    assert cut.tolist() == [True] and areas.tolist() == [30, 50]
    assert torch.equal(union, below) and boxes.tolist() == [[0, 0, 3, 10], [3, 0, 8, 10]]
    assert accepted.tolist() == [False, True]
    assert masks.shape == (2, 10, 10)
    assert masks[0].sum() == 30 and not masks[0, :, 3].any()
    assert torch.equal(masks[1], below)


@pytest.mark.parametrize('box_type', [torch.Tensor, HorizontalBoxes])
def test_copy_paste_drops_cuts_and_recomputes_boxes(box_type):
    size = 20
    existing = np.zeros((1, size, size), dtype=np.uint8)
    existing[0, :10, :10] = 1  # area 100
    source = np.zeros((2, size, size), dtype=np.uint8)
    source[0, :6, :10] = 1  # covers 60% of the existing mask: dropped
    source[1, 7:18, :10] = 1  # covers 30%: pasted, cropped at row 16
    samples = [
        make_sample((16, size), existing, [0.9], box_type),
        make_sample((size, size), source, [0.8, 0.7], box_type)
    ]
    inputs = normalize(torch.rand(2, 3, size, size) * 255)
    aug = TwoViewAugment(MEAN, STD, **OFF)
    torch.manual_seed(0)
    out_inputs, out_samples = aug(inputs, samples)

    strong = out_samples[2].gt_instances
    expected_existing = np.zeros((size, size), dtype=np.uint8)
    expected_existing[:7, :10] = 1
    expected_pasted = np.zeros((size, size), dtype=np.uint8)
    expected_pasted[7:16, :10] = 1
    assert torch.equal(strong.masks, torch.from_numpy(np.stack((expected_existing, expected_pasted))).bool())
    bboxes = strong.bboxes.tensor if box_type is HorizontalBoxes \
        else strong.bboxes
    assert isinstance(strong.bboxes, box_type)
    assert bboxes.tolist() == [[0, 0, 10, 7], [0, 7, 10, 16]]
    torch.testing.assert_close(strong.scores, torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(
        strong.embs,
        torch.stack((samples[0].gt_instances.embs[0],
                     samples[1].gt_instances.embs[1])))
    assert strong.labels.tolist() == [0, 0]
    # pixels: the pasted object comes from image 1, the rest from image 0
    pasted = torch.from_numpy(expected_pasted).bool()
    torch.testing.assert_close(out_inputs[2][:, pasted], inputs[1][:, pasted])
    torch.testing.assert_close(out_inputs[2][:, ~pasted],
                               inputs[0][:, ~pasted])
    # the other direction: the existing square covers 100% of source[0]
    other = out_samples[3].gt_instances
    assert torch.equal(other.masks, torch.from_numpy(source).bool())
    assert torch.equal(out_inputs[3], inputs[1])


def test_copy_paste_needs_bitmap_masks():
    inputs, samples = random_batch(num_images=2)
    samples[0].gt_instances.masks = PolygonMasks(
        [[np.array([0., 0., 5., 0., 5., 5.])]] * 2, 24, 32)
    with pytest.raises(TypeError, match='BitmapMasks'):
        TwoViewAugment(MEAN, STD)(inputs, samples)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        TwoViewAugment(MEAN, STD)(inputs[:, :1], samples)


def test_inside_the_freesolo_preprocessor():
    import freesolo_mmdet.models.data_preprocessors.color_similarity  # noqa
    preprocessor = MODELS.build(
        dict(
            type='FreeSOLODataPreprocessor',
            mean=MEAN,
            std=STD,
            bgr_to_rgb=True,
            pad_size_divisor=32,
            pad_mask=True,
            batch_augments=[
                dict(type='TwoViewAugment', mean=MEAN, std=STD,
                     max_pastes=2)
            ]))
    data = demo_mm_inputs(
        2, [(3, 100, 120), (3, 90, 110)], num_items=[3, 2], num_classes=2,
        with_mask=True)
    data = preprocessor(data, training=True)
    inputs, samples = data['inputs'], data['data_samples']
    assert inputs.shape == (4, 3, 128, 128)
    assert len(samples) == 4
    for sample in samples:
        assert sample.color_similarity.shape == (8, 32, 32)
        gt = sample.gt_instances
        assert len(gt.masks) == len(gt.labels) == len(gt.bboxes)
        assert gt.masks.shape[1:] == (128, 128)


def reference_paste(masks, pasted, overlap_thr=0.5):
    """The rule of paste_masks, one pixel set at a time (numpy): a pasted mask is dropped if it is empty or
    covers >= overlap_thr of a current non-empty mask; otherwise it cuts every current mask and is appended."""
    current = [m.copy() for m in masks]
    accepted = []
    for mask in pasted:
        if not mask.any() or any(c.sum() > 0 and (c & mask).sum() >= overlap_thr * c.sum() for c in current):
            accepted.append(False)
            continue
        current = [c & ~mask for c in current] + [mask.copy()]
        accepted.append(True)
    return np.stack(current) if current else np.zeros((0, *masks.shape[1:]), bool), accepted


def mask2bbox_np(masks):
    """x1y1x2y2 float32 boxes of (n, H, W) bool masks, exclusive ends, zeros for an empty mask (numpy)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for box, mask in zip(boxes, masks):
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        if len(rows):
            box[:] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return boxes


@pytest.mark.parametrize('windows', ['computed', 'loose', 'views', 'cropped'])
@pytest.mark.parametrize('batched', [False, True])
@pytest.mark.parametrize('seed', range(12))
def test_paste_masks_equals_the_rule_on_random_overlapping_masks(seed, batched, windows):
    """The rule, with the windows computed or given loose (the whole map for every mask, the empty ones too); the
    pasted masks also as a list of views, with their windows computed, or cropped to a top-left part of the map (the
    masks as if zeroed outside it)."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(8, 40, 2)

    def random_masks(num):
        masks = np.zeros((num, height, width), bool)
        for mask in masks:
            top, left = rng.integers(0, height), rng.integers(0, width)
            mask[top:top + rng.integers(1, height), left:left + rng.integers(1, width)] = True
            mask &= rng.random((height, width)) < 0.9  # holes
        if num:
            masks[rng.integers(num)] = False  # an empty one
        return masks

    existing, pasted = random_masks(rng.integers(0, 6)), random_masks(rng.integers(1, 12))
    given, to_paste = {}, torch.from_numpy(pasted)
    if windows == 'loose':
        whole = (slice(0, height), slice(0, width))
        given = dict(windows=[whole] * len(existing), pasted_windows=[whole] * len(pasted))
    if windows in ('views', 'cropped'):
        to_paste = list(torch.from_numpy(pasted))
    if windows == 'cropped':
        crop_h, crop_w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        given = dict(pasted_windows=[_clipped(window, crop_h, crop_w) for window in _windows(torch.from_numpy(pasted))])
        pasted = pasted.copy()
        pasted[:, crop_h:] = pasted[:, :, crop_w:] = False
    expected, expected_accepted = reference_paste(existing, pasted)
    result = paste_masks(torch.from_numpy(existing), to_paste, batched=batched, **given)
    masks, accepted = result.masks, result.accepted
    assert accepted.tolist() == expected_accepted
    assert result.areas.tolist() == expected.sum((1, 2)).tolist()
    assert result.cut.tolist() == (expected[:len(existing)] != existing).any((1, 2)).tolist()
    assert masks.dtype == torch.bool
    assert torch.equal(masks, torch.from_numpy(expected))
    num_existing = len(existing)
    assert torch.equal(result.pasted_union, torch.from_numpy(expected[num_existing:].any(0)))
    changed = np.concatenate((result.cut.numpy(), np.ones(len(expected) - num_existing, bool)))
    assert torch.equal(result.changed_boxes, torch.from_numpy(mask2bbox_np(expected[changed])))


def test_tight_boxes_equal_mmdet_mask2bbox():
    from mmdet.structures.mask import mask2bbox
    masks = torch.rand(6, 17, 23) > 0.97
    masks[2] = False
    masks[3] = False
    masks[3, 16, 22] = True  # the last pixel
    torch.testing.assert_close(tight_boxes(masks), mask2bbox(masks))


@pytest.mark.parametrize('sigma', [0.3, 1.0, 2.0])
def test_gaussian_blur_equals_a_2d_convolution(sigma):
    image = torch.rand(3, 19, 26)
    radius = math.ceil(3 * sigma)
    weights = torch.tensor([math.exp(-x**2 / (2 * sigma**2)) for x in range(-radius, radius + 1)])
    kernel = torch.outer(weights, weights) / weights.sum()**2
    padded = torch.nn.functional.pad(image[None], (radius, ) * 4, mode='reflect')
    expected = torch.nn.functional.conv2d(padded, kernel.expand(3, 1, -1, -1), groups=3)[0]
    torch.testing.assert_close(gaussian_blur(image, sigma), expected, atol=1e-5, rtol=0)


def test_the_preprocessor_gives_its_normalization_and_refuses_another():
    import freesolo_mmdet.models.data_preprocessors.color_similarity  # noqa
    bgr_mean, bgr_std = MEAN[::-1], STD[::-1]
    preprocessor = MODELS.build(
        dict(type='FreeSOLODataPreprocessor', mean=bgr_mean, std=bgr_std, bgr_to_rgb=False,
             batch_augments=[dict(type='TwoViewAugment', copy_paste=False, **dict(OFF, grayscale_prob=1))]))
    augment = preprocessor.batch_augments[0]
    assert augment.normalization == (pytest.approx(bgr_mean), pytest.approx(bgr_std), False)
    # grayscale of BGR inputs: luma of (R, G, B) = (channel 2, 1, 0), padding untouched
    bgr = torch.rand(2, 3, 20, 28) * 255
    inputs = (bgr - torch.tensor(bgr_mean).view(3, 1, 1)) / torch.tensor(bgr_std).view(3, 1, 1)
    _, samples = random_batch(num_images=2, size=(20, 28), img_shape=(20, 28))
    out, _ = augment(inputs, samples)
    luma = 0.299 * bgr[:, 2] + 0.587 * bgr[:, 1] + 0.114 * bgr[:, 0]
    strong = out[2:] * torch.tensor(bgr_std).view(3, 1, 1) + torch.tensor(bgr_mean).view(3, 1, 1)
    torch.testing.assert_close(strong, luma[:, None].expand(-1, 3, -1, -1), atol=1e-3, rtol=0)
    MODELS.build(dict(type='FreeSOLODataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True,  # the same: fine
                      batch_augments=[dict(type='TwoViewAugment', mean=MEAN, std=STD)]))
    with pytest.raises(ValueError, match='leave them unset'):
        MODELS.build(dict(type='FreeSOLODataPreprocessor', mean=MEAN, std=STD, bgr_to_rgb=True,
                          batch_augments=[dict(type='TwoViewAugment', mean=bgr_mean, std=bgr_std)]))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_bgr_inputs_give_the_rgb_result_flipped(seed):
    """Every photometric step (jitter with hue, grayscale, blur, erasing) works in the inputs' channel order: BGR
    inputs, with the BGR mean and std, come out as the channel flip of the same RGB inputs' result."""
    steps = dict(copy_paste=False, jitter_prob=1, grayscale_prob=0.5, blur_prob=1,
                 erasings=[(1, (0.05, 0.2), (0.3, 3.3))])
    rgb_augment = TwoViewAugment(mean=MEAN, std=STD, bgr_to_rgb=True, **steps)
    bgr_augment = TwoViewAugment(mean=MEAN[::-1], std=STD[::-1], bgr_to_rgb=False, **steps)
    rgb = (torch.rand(2, 3, 20, 28) * 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    _, samples = random_batch(num_images=2, size=(20, 28), img_shape=(20, 28))
    torch.manual_seed(seed)
    rgb_out, _ = rgb_augment(rgb.clone(), copy.deepcopy(samples))
    torch.manual_seed(seed)
    bgr_out, _ = bgr_augment(rgb.flip(1), copy.deepcopy(samples))
    assert not torch.allclose(rgb_out[2:], rgb)  # the steps fired
    torch.testing.assert_close(bgr_out, rgb_out.flip(1), atol=1e-5, rtol=0)


def test_tensors_stay_tensors(monkeypatch):
    """No host round trip: given tensor masks, the augment never converts to numpy."""
    inputs, samples = random_batch()
    for sample in samples:
        sample.gt_instances.masks = torch.from_numpy(sample.gt_instances.masks.masks).bool()

    def no_numpy(*args, **kwargs):
        raise AssertionError('numpy() called')

    monkeypatch.setattr(torch.Tensor, 'numpy', no_numpy)
    torch.manual_seed(0)
    out_inputs, out_samples = TwoViewAugment(MEAN, STD, blur_prob=1, jitter_prob=1)(inputs, samples)
    assert [len(s.gt_instances) for s in out_samples[3:]] == [3, 3, 4]  # as from BitmapMasks
    assert all(isinstance(s.gt_instances.masks, torch.Tensor) for s in out_samples)
