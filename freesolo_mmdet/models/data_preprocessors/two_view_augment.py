# Copyright (c) freesolo_mmdet contributors.
"""FreeSOLO's two-view training batch (spec section 2) as an mmdet batch
augment: the batch as loaded is the weak view; a strong copy of it gets
objects of another image copy-pasted in, then colour jitter, grayscale,
Gaussian blur and random erasing."""
import copy
import math
from numbers import Number
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import BaseBoxes
from mmdet.structures.mask import BitmapMasks, mask2bbox

__all__ = [
    'rgb_to_hsv', 'hsv_to_rgb', 'adjust_hue', 'gaussian_blur',
    'paste_masks', 'TwoViewAugment'
]

# ITU-R 601 luma weights (R, G, B), as PIL's and torchvision's grayscale.
_LUMA = (0.299, 0.587, 0.114)
# The strong augmentation of the release (from Unbiased Teacher): three
# erasings as (probability, area fraction range, aspect ratio h/w range).
_ERASINGS = ((0.7, (0.05, 0.2), (0.3, 3.3)), (0.5, (0.02, 0.2), (0.1, 6.0)),
             (0.3, (0.02, 0.2), (0.05, 8.0)))


def _luma(image: Tensor) -> Tensor:
    """(3, H, W) RGB -> (1, H, W) ITU-R 601 luma."""
    return torch.einsum('c,chw->hw', image.new_tensor(_LUMA), image)[None]


def rgb_to_hsv(image: Tensor) -> Tensor:
    """(3, H, W) RGB in [0, 1] -> (3, H, W) HSV, all channels in [0, 1]."""
    max_value, max_index = image.max(dim=0)
    chroma = max_value - image.min(dim=0).values
    safe_chroma = chroma.clamp(min=1e-12)
    red, green, blue = image
    hue = torch.stack(((green - blue) / safe_chroma % 6,
                       (blue - red) / safe_chroma + 2,
                       (red - green) / safe_chroma + 4))
    hue = hue.gather(0, max_index[None])[0] / 6 * (chroma > 0)
    saturation = chroma / max_value.clamp(min=1e-12)
    return torch.stack((hue, saturation, max_value))


def hsv_to_rgb(image: Tensor) -> Tensor:
    """(3, H, W) HSV in [0, 1] -> (3, H, W) RGB in [0, 1]."""
    hue, saturation, value = image
    n = image.new_tensor((5., 3., 1.))[:, None, None]
    k = (n + hue * 6) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def adjust_hue(image: Tensor, shift: float) -> Tensor:
    """Rotate the HSV hue of a (3, H, W) RGB image in [0, 1] by ``shift``
    turns (torchvision's ``adjust_hue`` convention, shift in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(image)
    hsv[0] = (hsv[0] + shift) % 1
    return hsv_to_rgb(hsv)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (C, H, W) image, kernel size
    ``2 * ceil(3 sigma) + 1``, reflect padding (replicate where the image is
    too small to reflect)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype,
                           device=image.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    mode = 'reflect' if radius < min(image.shape[-2:]) else 'replicate'
    out = F.pad(image[None], (radius, radius, radius, radius), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, -1, -1, -1),
                   groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, -1, -1, -1),
                   groups=channels)
    return out[0]


def paste_masks(masks: Tensor,
                pasted: Tensor,
                overlap_thr: float = 0.5) -> Tuple[Tensor, Tensor]:
    """Paste masks one after another on top of existing ones.

    A pasted mask is dropped if it is empty or covers ``>= overlap_thr`` of
    any current non-empty mask (existing or pasted before it); otherwise every
    current mask is cut by it and it is appended.

    Args:
        masks (Tensor): (n, H, W) bool existing masks.
        pasted (Tensor): (m, H, W) bool masks to paste, in paste order.
        overlap_thr (float): Coverage that drops a pasted mask.

    Returns:
        tuple[Tensor, Tensor]: (n + k, H, W) bool cut masks, the existing
        ones first, then the k accepted pasted ones; (m, ) bool accepted.
    """
    num_existing, num_pasted = len(masks), len(pasted)
    out = masks.new_zeros((num_existing + num_pasted, *masks.shape[1:]))
    out[:num_existing] = masks
    areas = out.new_zeros(len(out), dtype=torch.long)
    areas[:num_existing] = masks.flatten(1).sum(dim=1)
    accepted = torch.zeros(num_pasted, dtype=torch.bool, device=masks.device)
    count = num_existing
    for index, mask in enumerate(pasted):
        rows = mask.any(dim=1).nonzero()
        cols = mask.any(dim=0).nonzero()
        if len(rows) == 0:
            continue
        window = (slice(int(rows[0]), int(rows[-1]) + 1),
                  slice(int(cols[0]), int(cols[-1]) + 1))
        crop = mask[window]
        current = out[:count, window[0], window[1]]  # a view into out
        covered = (current & crop).flatten(1).sum(dim=1)
        if bool(((covered >= overlap_thr * areas[:count]) &
                 (areas[:count] > 0)).any()):
            continue
        current &= ~crop
        areas[:count] -= covered
        out[count] = mask
        areas[count] = crop.sum()
        accepted[index] = True
        count += 1
    return out[:count], accepted


def _without_masks(instances: InstanceData) -> InstanceData:
    """A shallow copy of ``instances`` without its ``masks`` field."""
    return InstanceData(
        metainfo=instances.metainfo,
        **{k: v
           for k, v in instances.items() if k != 'masks'})


def _range(value: Union[float, Sequence[float]], center: float,
           name: str) -> Tuple[float, float]:
    """A jitter strength ``v`` as the range ``(center - v, center + v)``
    (lower end at least 0 for factors); a pair is taken as the range."""
    if isinstance(value, Number):
        if value < 0:
            raise ValueError(f'{name} must be >= 0, got {value}')
        low = center - value if center == 0 else max(0., center - value)
        return low, center + value
    low, high = value
    if low > high:
        raise ValueError(f'{name} range must be (min, max), got {value}')
    return float(low), float(high)


def _uniform(low: float, high: float) -> float:
    """One draw from U(low, high) with torch's global generator."""
    return low + (high - low) * torch.rand(()).item()


@MODELS.register_module()
class TwoViewAugment(nn.Module):
    """Double a training batch into a weak and a strong view.

    Returns ``[weak_1..weak_B, strong_1..strong_B]``: the weak views are the
    inputs as given (geometric augmentation already done by the pipeline, so
    both views share geometry); the strong views use deep-copied data samples.
    Strong view ``i`` is made from weak view ``i`` in this order, each step
    with its own random draws (torch's global generator, so
    ``torch.manual_seed`` makes it reproducible):

    1. copy-paste: up to ``max_pastes`` instances of weak view
       ``j = (i + 1) % B``, in random order, at the same position, cropped to
       both images' valid region (``img_shape``), via :func:`paste_masks`.
       Accepted objects' pixels are copied from weak view ``j``; existing
       masks are cut and their boxes recomputed tightly, empty instances are
       removed, pasted instances are appended with all their
       ``gt_instances`` fields (``labels``, ``scores``, ``embs``...) and tight
       boxes of their (cropped, cut) masks. Needs ``gt_instances.masks`` as
       ``BitmapMasks`` (at ``img_shape``, or padded by the preprocessor's
       ``pad_mask=True``) and the same fields in every image.
    2. colour jitter with probability ``jitter_prob``: brightness, contrast,
       saturation and hue in random order, as torchvision's ``ColorJitter``;
       hue rotates the HSV hue (:func:`adjust_hue`).
    3. grayscale with probability ``grayscale_prob`` (ITU-R 601 luma).
    4. Gaussian blur with probability ``blur_prob``, sigma ~ U(blur_sigma).
    5. random erasings: each ``(p, area_range, aspect_range)`` of
       ``erasings`` erases, with probability p, one rectangle of that area
       fraction and log-uniform aspect (height / width) with uniform noise in
       [0, 255] (the release's ``value="random"``). Erasing is occlusion
       noise: masks and boxes are left unchanged, as in the release.

    Photometric steps work on each image's valid region in [0, 255] RGB (the
    inputs are denormalised with ``mean``/``std``, then normalised back), so
    padding is never touched; an image no step fires on is copied
    bit-for-bit. Set a probability to 0 (or ``copy_paste=False``) to disable
    a step.

    Colour similarity: used as a ``batch_augments`` entry of
    :class:`FreeSOLODataPreprocessor`, this runs inside the parent
    ``DetDataPreprocessor.forward``, before the preprocessor computes
    ``color_similarity`` on the batch it returns. So the strong views'
    similarity (B+1..2B, for the pairwise loss) is computed from the
    augmented strong pixels (pasted objects, jitter, grayscale, blur and
    erasings included), not copied from the weak views.

    Args:
        mean (Sequence[Number], optional): The preprocessor's ``mean``;
            None if the inputs are not normalised.
        std (Sequence[Number], optional): The preprocessor's ``std``.
        bgr_to_rgb (bool): The preprocessor's ``bgr_to_rgb``: True if the
            inputs are RGB, False if BGR. Defaults to True.
        brightness, contrast, saturation (float | tuple): Jitter strength
            ``v`` (factor ~ U(max(0, 1 - v), 1 + v)) or a (min, max) factor
            range. Defaults to 0.4.
        hue (float | tuple): Hue shift ~ U(-v, v) turns, or a (min, max)
            range. Defaults to 0.1.
        jitter_prob (float): Defaults to 0.8.
        grayscale_prob (float): Defaults to 0.2.
        blur_prob (float): Defaults to 0.5.
        blur_sigma (tuple[float, float]): Defaults to (0.1, 2.0).
        erasings (Sequence[tuple]): ``(p, (min_area, max_area),
            (min_aspect, max_aspect))`` per erasing; the release's three by
            default.
        copy_paste (bool): Defaults to True.
        max_pastes (int, optional): At most this many instances pasted per
            image; None pastes all. Defaults to None.
        paste_overlap_thr (float): A pasted object covering at least this
            fraction of an existing mask is dropped. Defaults to 0.5.
    """

    def __init__(self,
                 mean: Optional[Sequence[Number]] = None,
                 std: Optional[Sequence[Number]] = None,
                 bgr_to_rgb: bool = True,
                 brightness: Union[float, Sequence[float]] = 0.4,
                 contrast: Union[float, Sequence[float]] = 0.4,
                 saturation: Union[float, Sequence[float]] = 0.4,
                 hue: Union[float, Sequence[float]] = 0.1,
                 jitter_prob: float = 0.8,
                 grayscale_prob: float = 0.2,
                 blur_prob: float = 0.5,
                 blur_sigma: Tuple[float, float] = (0.1, 2.0),
                 erasings: Sequence[tuple] = _ERASINGS,
                 copy_paste: bool = True,
                 max_pastes: Optional[int] = None,
                 paste_overlap_thr: float = 0.5) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError('give both mean and std, or neither')
        self.normalized = mean is not None
        if self.normalized:
            self.register_buffer('mean',
                                 torch.tensor(mean).view(-1, 1, 1), False)
            self.register_buffer('std',
                                 torch.tensor(std).view(-1, 1, 1), False)
        self.bgr_to_rgb = bgr_to_rgb
        self.brightness = _range(brightness, 1., 'brightness')
        self.contrast = _range(contrast, 1., 'contrast')
        self.saturation = _range(saturation, 1., 'saturation')
        self.hue = _range(hue, 0., 'hue')
        if not -0.5 <= self.hue[0] <= self.hue[1] <= 0.5:
            raise ValueError(f'hue must lie in [-0.5, 0.5], got {hue}')
        self.jitter_prob = jitter_prob
        self.grayscale_prob = grayscale_prob
        self.blur_prob = blur_prob
        self.blur_sigma = blur_sigma
        self.erasings = [(p, tuple(area), tuple(aspect))
                         for p, area, aspect in erasings]
        self.copy_paste = copy_paste
        self.max_pastes = max_pastes
        self.paste_overlap_thr = paste_overlap_thr

    def forward(
        self, inputs: Tensor, data_samples: List[DetDataSample]
    ) -> Tuple[Tensor, List[DetDataSample]]:
        """Return ``(2B, C, H, W)`` inputs and ``2B`` data samples, weak
        views first.

        Args:
            inputs (Tensor): (B, 3, H, W) normalised, padded images.
            data_samples (list[DetDataSample]): With ``img_shape`` and
                ``gt_instances`` (``masks`` as ``BitmapMasks`` for
                copy-paste).
        """
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError('TwoViewAugment needs (B, 3, H, W) colour '
                             f'images, got {tuple(inputs.shape)}')
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError('TwoViewAugment needs one data sample per image')
        strong_inputs = inputs.clone()
        strong_samples = copy.deepcopy(data_samples)
        num_images = len(inputs)
        for i, sample in enumerate(strong_samples):
            if self.copy_paste and num_images > 1:
                j = (i + 1) % num_images
                self._copy_paste(strong_inputs[i], sample, inputs[j],
                                 data_samples[j])
            height, width = sample.img_shape[:2]
            valid = strong_inputs[i, :, :height, :width]
            valid.copy_(self._photometric(valid))
        return (torch.cat((inputs, strong_inputs)),
                list(data_samples) + strong_samples)

    def _copy_paste(self, image: Tensor, sample: DetDataSample,
                    src_image: Tensor, src_sample: DetDataSample) -> None:
        """Paste instances of ``src`` into ``image`` and ``sample`` in
        place (see the class docstring, step 1)."""
        gt, src_gt = sample.gt_instances, src_sample.gt_instances
        for instances in (gt, src_gt):
            if not isinstance(instances.get('masks'), BitmapMasks):
                raise TypeError('copy-paste needs gt_instances.masks as '
                                'BitmapMasks, got '
                                f'{type(instances.get("masks")).__name__}')
        if set(gt.keys()) != set(src_gt.keys()):
            raise ValueError('copy-paste needs the same gt_instances fields '
                             f'in every image, got {sorted(gt.keys())} and '
                             f'{sorted(src_gt.keys())}')
        if len(src_gt) == 0:
            return
        device = image.device
        masks = torch.from_numpy(gt.masks.masks).to(device, torch.bool)
        mask_h, mask_w = masks.shape[-2:]
        order = torch.randperm(len(src_gt))[:self.max_pastes].to(device)
        src_masks = torch.from_numpy(src_gt.masks.masks).to(device)[order]
        crop_h = min(mask_h, src_masks.shape[1], sample.img_shape[0],
                     src_sample.img_shape[0])
        crop_w = min(mask_w, src_masks.shape[2], sample.img_shape[1],
                     src_sample.img_shape[1])
        pasted = masks.new_zeros((len(order), mask_h, mask_w))
        pasted[:, :crop_h, :crop_w] = src_masks[:, :crop_h, :crop_w].bool()

        new_masks, accepted = paste_masks(masks, pasted,
                                          self.paste_overlap_thr)
        if not accepted.any():
            return
        union = pasted[accepted].any(dim=0)
        image[:, :mask_h, :mask_w] = torch.where(
            union, src_image[:, :mask_h, :mask_w], image[:, :mask_h,
                                                         :mask_w])

        # merge the other fields without indexing BitmapMasks (slow)
        merged = InstanceData.cat(
            [_without_masks(gt),
             _without_masks(src_gt)[order[accepted]]])
        if 'bboxes' in merged:
            changed = torch.cat(((new_masks[:len(masks)] != masks).flatten(
                1).any(dim=1), accepted.new_ones(int(accepted.sum()))))
            bboxes = merged.bboxes
            is_box_type = isinstance(bboxes, BaseBoxes)
            boxes = (bboxes.tensor if is_box_type else bboxes).clone()
            boxes[changed] = mask2bbox(new_masks[changed]).to(boxes)
            merged.bboxes = type(bboxes)(boxes) if is_box_type else boxes
        not_empty = new_masks.flatten(1).any(dim=1)
        merged = merged[not_empty]
        merged.masks = BitmapMasks(
            new_masks[not_empty].cpu().numpy().astype(np.uint8), mask_h,
            mask_w)
        sample.gt_instances = merged

    def _photometric(self, image: Tensor) -> Tensor:
        """Steps 2-5 on one (3, h, w) normalised valid region; returned
        unchanged (same tensor) if no step fires."""
        steps = []
        if torch.rand(()).item() < self.jitter_prob:
            steps += [self._jitter_step(k) for k in torch.randperm(4)]
        if torch.rand(()).item() < self.grayscale_prob:
            steps.append(lambda x: _luma(x).expand_as(x))
        if torch.rand(()).item() < self.blur_prob:
            sigma = _uniform(*self.blur_sigma)
            steps.append(lambda x: gaussian_blur(x, sigma))
        for prob, area_range, aspect_range in self.erasings:
            if torch.rand(()).item() < prob:
                steps.append(self._erase_step(image.shape[-2:], area_range,
                                              aspect_range))
        steps = [step for step in steps if step is not None]
        if not steps:
            return image

        rgb = image * self.std + self.mean if self.normalized else image
        rgb = (rgb if self.bgr_to_rgb else rgb.flip(0)) / 255
        for step in steps:
            rgb = step(rgb).clamp(0, 1)
        rgb = (rgb if self.bgr_to_rgb else rgb.flip(0)) * 255
        return (rgb - self.mean) / self.std if self.normalized else rgb

    def _jitter_step(self, kind: int):
        """Colour jitter step ``kind`` (0 brightness, 1 contrast,
        2 saturation, 3 hue) with a fresh random factor; x in [0, 1]."""
        if kind == 0:
            factor = _uniform(*self.brightness)
            return lambda x: x * factor
        if kind == 1:
            factor = _uniform(*self.contrast)
            return lambda x: factor * x + (1 - factor) * _luma(x).mean()
        if kind == 2:
            factor = _uniform(*self.saturation)
            return lambda x: factor * x + (1 - factor) * _luma(x)
        shift = _uniform(*self.hue)
        return lambda x: adjust_hue(x, shift)

    @staticmethod
    def _erase_step(size: Tuple[int, int], area_range: Tuple[float, float],
                    aspect_range: Tuple[float, float]):
        """An erasing step with a random rectangle (10 tries to fit, as
        torchvision), or None if none fits."""
        height, width = size
        log_aspects = (math.log(aspect_range[0]), math.log(aspect_range[1]))
        for _ in range(10):
            area = height * width * _uniform(*area_range)
            aspect = math.exp(_uniform(*log_aspects))
            erase_h = round(math.sqrt(area * aspect))
            erase_w = round(math.sqrt(area / aspect))
            if 0 < erase_h < height and 0 < erase_w < width:
                top = int(torch.randint(height - erase_h + 1, ()))
                left = int(torch.randint(width - erase_w + 1, ()))
                break
        else:
            return None

        def erase(x: Tensor) -> Tensor:
            x = x.clone()
            x[:, top:top + erase_h, left:left + erase_w] = torch.rand(
                (3, erase_h, erase_w), dtype=x.dtype, device=x.device)
            return x

        return erase
