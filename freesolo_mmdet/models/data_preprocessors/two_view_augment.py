# Copyright (c) freesolo_mmdet contributors.
"""FreeSOLO's two-view training batch (spec section 2) as an mmdet batch augment: the batch as loaded is the weak
view; a strong copy of it gets objects of another image copy-pasted in, then colour jitter, grayscale, Gaussian
blur and random erasing. Everything runs as tensor operations on the inputs' device: masks are bool tensors from
here on (the one host-to-device copy of the ground-truth masks, which the stock SOLOv2 head would make itself)."""
import copy
import math
from numbers import Number
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import BaseBoxes
from mmdet.structures.mask import BitmapMasks

from freesolo_mmdet.utils.mask_ops import mask_bounds

__all__ = [
    'adjust_hue', 'gaussian_blur', 'masks_as_tensor', 'paste_masks', 'PasteResult', 'TwoViewAugment'
]

# ITU-R 601 luma weights (R, G, B), as PIL's and torchvision's grayscale.
_LUMA = (0.299, 0.587, 0.114)
# The strong augmentation of the release (from Unbiased Teacher): three erasings as
# (probability, area fraction range, aspect ratio h/w range).
_ERASINGS = ((0.7, (0.05, 0.2), (0.3, 3.3)), (0.5, (0.02, 0.2), (0.1, 6.0)), (0.3, (0.02, 0.2), (0.05, 8.0)))


def _rgb(image: Tensor, bgr: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """The red, green and blue planes of a (3, H, W) RGB image (BGR if ``bgr``)."""
    return (image[2], image[1], image[0]) if bgr else (image[0], image[1], image[2])


def _luma(image: Tensor, bgr: bool = False) -> Tensor:
    """(3, H, W) RGB (BGR if ``bgr``) -> (1, H, W) ITU-R 601 luma."""
    red, green, blue = _rgb(image, bgr)
    return (red * _LUMA[0] + green * _LUMA[1] + blue * _LUMA[2])[None]


def adjust_hue(image: Tensor, shift: float, bgr: bool = False) -> Tensor:
    """Rotate the HSV hue of a (3, H, W) RGB image (BGR if ``bgr``, returned in the same order) in [0, 1] by
    ``shift`` turns (torchvision's ``adjust_hue`` convention, shift in [-0.5, 0.5]).

    A hue rotation keeps value (the channel max) and chroma (max - min), so the result is
    ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h') mod 6``, n = 5, 3, 1 for R, G, B
    (the HSV-to-RGB formula), without a full HSV round trip. Where channels tie for the maximum, red wins over
    green over blue, as ``colorsys``.
    """
    red, green, blue = _rgb(image, bgr)
    value = image.amax(dim=0)
    chroma = value - image.amin(dim=0)
    safe_chroma = chroma.clamp(min=1e-12)
    hue6 = torch.where(red == value, (green - blue) / safe_chroma,
                       torch.where(green == value, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4))
    hue6 = (hue6 + 6 * shift) % 6
    k = (image.new_tensor((1., 3., 5.) if bgr else (5., 3., 1.))[:, None, None] + hue6) % 6
    return value - chroma * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (C, H, W) image, kernel size ``2 * ceil(3 sigma) + 1``, reflect padding
    (replicate where the image is too small to reflect).

    Computed as a weighted sum of shifted views, one pass per tap and direction: on a CPU 5x faster than a
    grouped ``conv2d`` with a 1-D kernel, and the same sum.
    """
    radius = math.ceil(3 * sigma)
    weights = [math.exp(-offset**2 / (2 * sigma**2)) for offset in range(-radius, radius + 1)]
    weights = [weight / sum(weights) for weight in weights]
    height, width = image.shape[-2:]
    mode = 'reflect' if radius < min(height, width) else 'replicate'
    padded = F.pad(image[None], (radius, radius, radius, radius), mode=mode)[0]
    rows = padded[..., :width] * weights[0]
    for tap in range(1, len(weights)):
        rows.add_(padded[..., tap:tap + width], alpha=weights[tap])
    out = rows[..., :height, :] * weights[0]
    for tap in range(1, len(weights)):
        out.add_(rows[..., tap:tap + height, :], alpha=weights[tap])
    return out


def masks_as_tensor(masks: Union[BitmapMasks, Tensor], device: torch.device) -> Tensor:
    """(n, H, W) bool tensor on ``device`` of ``BitmapMasks`` or of a tensor."""
    if isinstance(masks, BitmapMasks):
        return torch.from_numpy(masks.masks).to(device).bool()
    if isinstance(masks, Tensor):
        return masks.to(device).bool()
    raise TypeError(f'copy-paste needs gt_instances.masks as BitmapMasks or a tensor, got {type(masks).__name__}')


def _windows(masks: Tensor) -> List[Optional['Window']]:
    """Each (H, W) mask's bounding window as (rows, cols) slices, None for an empty mask (one host sync)."""
    if len(masks) == 0:
        return []
    return [(slice(top, bottom), slice(left, right)) if not_empty else None
            for top, bottom, left, right, not_empty in mask_bounds(masks).tolist()]


Window = Tuple[slice, slice]


def _intersection(window: Window, other: Window) -> Optional[Window]:
    """The common part of two windows, None if they do not meet."""
    rows = slice(max(window[0].start, other[0].start), min(window[0].stop, other[0].stop))
    cols = slice(max(window[1].start, other[1].start), min(window[1].stop, other[1].stop))
    return (rows, cols) if rows.start < rows.stop and cols.start < cols.stop else None


def _clipped(window: Optional[Window], height: int, width: int) -> Optional[Window]:
    """``window`` cut to the top-left ``height`` x ``width``; None if nothing is left."""
    if window is None or window[0].start >= height or window[1].start >= width:
        return None
    return slice(window[0].start, min(window[0].stop, height)), slice(window[1].start, min(window[1].stop, width))


def _shifted(window: Window, origin: Window) -> Window:
    """``window`` in the coordinates of a crop at ``origin``."""
    return (slice(window[0].start - origin[0].start, window[0].stop - origin[0].start),
            slice(window[1].start - origin[1].start, window[1].stop - origin[1].start))


class PasteResult(NamedTuple):
    """What :func:`paste_masks` returns: ``masks`` (n + k, H, W) bool, the n cut existing masks, then the k
    accepted pasted ones; ``accepted`` (m, ) bool, per pasted mask; ``cut`` (n, ) bool, the existing masks that
    lost pixels; ``areas`` (n + k, ) int32, the pixel counts of ``masks``; ``pasted_union`` (H, W) bool, the
    pixels of the accepted pasted masks; ``changed_boxes`` (c + k, 4) float, the tight x1y1x2y2 boxes of the c
    cut masks (in index order) and of the k accepted ones, zeros for an empty mask (``mask_ops.tight_boxes``)."""
    masks: Tensor
    accepted: Tensor
    cut: Tensor
    areas: Tensor
    pasted_union: Tensor
    changed_boxes: Tensor


def _tight_boxes_in_windows(masks: Tensor, indexes: List[int], windows: List[Window]) -> Tensor:
    """(len(indexes), 4) float ``mask_ops.tight_boxes`` of ``masks[indexes[i]]``, each read only inside
    ``windows[i]``, which holds all its pixels."""
    if not indexes:
        return torch.zeros((0, 4), device=masks.device)
    bounds = torch.cat([mask_bounds(masks[index][window][None]) + torch.tensor(
        (window[0].start, window[0].start, window[1].start, window[1].start, 0), device=masks.device)
        for index, window in zip(indexes, windows)])
    return (bounds[:, [2, 0, 3, 1]] * bounds[:, 4:]).float()


def paste_masks(masks: Tensor, pasted: Tensor, overlap_thr: float = 0.5,
                batched: Optional[bool] = None, windows: Optional[List[Optional[Window]]] = None,
                pasted_windows: Optional[List[Optional[Window]]] = None) -> PasteResult:
    """Paste masks one after another on top of existing ones.

    A pasted mask is dropped if it is empty or covers ``>= overlap_thr`` of any current non-empty mask (existing
    or pasted before it); otherwise every current mask is cut by it and it is appended.

    Implemented with an owner map, the index of the last accepted pasted mask at each pixel (m: none), so that
    the current masks are never materialised in the loop: existing mask c is ``masks[c] & (owner == m)``, accepted
    pasted mask k is ``owner == k``. Work is confined to bounding windows: a pasted mask reads the owner map in its
    window and each existing mask where their windows meet (on a GPU, all of them in the pasted mask's window at
    once, which launches fewer kernels). The decisions stay on the device: one host sync for the windows, one at
    the end.

    Args:
        masks (Tensor): (n, H, W) bool existing masks.
        pasted (Tensor | Sequence[Tensor]): (m, H, W) bool masks to paste, in paste order, or m (H, W) ones (views
            of other masks: nothing is copied).
        overlap_thr (float): Coverage that drops a pasted mask.
        batched (bool, optional): Count the coverage of all existing masks in a pasted mask's window at once
            (fewer kernels) rather than pair by pair where windows meet (fewer pixels). None: batched on CUDA.
        windows, pasted_windows (list, optional): A window (rows, cols) of slices per mask of ``masks`` and of
            ``pasted`` that holds all its pixels, or None for an empty mask; the result does not depend on how
            tight they are. A mask is read only inside its window: a window that leaves pixels out crops the mask
            to it. None: computed (``mask_bounds``, one pass over the masks).
    """
    num_existing, num_pasted, device = len(masks), len(pasted), masks.device
    nobody = num_pasted  # the owner of pixels that no accepted pasted mask covers
    owner = torch.full(masks.shape[1:], nobody, dtype=torch.int32, device=device)
    existing_bytes = masks.view(torch.uint8)
    existing_windows = _windows(masks) if windows is None else windows
    batched = masks.is_cuda if batched is None else batched
    if batched:
        existing_areas = existing_bytes.flatten(1).sum(1, dtype=torch.int32)
    else:
        existing_areas = torch.stack([existing_bytes[c][w].sum(dtype=torch.int32) if w else masks.new_zeros(
            (), dtype=torch.int32) for c, w in enumerate(existing_windows)]) if num_existing else masks.new_zeros(
                0, dtype=torch.int32)
    initial_areas = existing_areas.clone()
    pasted_areas = torch.zeros(num_pasted + 1, dtype=torch.int32, device=device)  # the last one: nobody's
    accepted = torch.zeros(num_pasted, dtype=torch.bool, device=device)
    if pasted_windows is None:
        pasted_windows = _windows(pasted) if isinstance(pasted, Tensor) else [
            _windows(mask[None])[0] for mask in pasted]
    for index, window in enumerate(pasted_windows):
        if window is None:
            continue
        meets = [(c, _intersection(window, other)) for c, other in enumerate(existing_windows) if other is not None]
        meets = [(c, common) for c, common in meets if common is not None]
        mask = pasted[index][window]
        owner_window = owner[window]
        # pixel counts of this mask per current owner (the pasted masks accepted before, and nobody)
        by_owner = torch.zeros_like(pasted_areas).index_add_(0, owner_window.flatten(), mask.flatten().to(torch.int32))
        covered_pasted = by_owner[:-1]
        area = by_owner.sum()
        drop = ((covered_pasted >= overlap_thr * pasted_areas[:-1]) & (pasted_areas[:-1] > 0)).any() | (area == 0)
        if meets:
            near = torch.tensor([c for c, _ in meets], device=device)
            free = (mask & (owner_window == nobody)).view(torch.uint8)
            if batched:
                covered = (existing_bytes[:, window[0], window[1]][near] & free).flatten(1).sum(1, dtype=torch.int32)
            else:
                covered = torch.stack([(existing_bytes[c][common] & free[_shifted(common, window)]).sum(
                    dtype=torch.int32) for c, common in meets])
            near_areas = existing_areas[near]
            drop |= ((covered >= overlap_thr * near_areas) & (near_areas > 0)).any()
        keep = ~drop
        # updates weighted by keep: no host sync inside the loop
        if meets:
            existing_areas.index_add_(0, near, -covered * keep)
        pasted_areas[:-1] -= covered_pasted * keep
        pasted_areas[index] = area * keep
        owner_window.masked_fill_(mask & keep, index)
        accepted[index] = keep

    cut = existing_areas < initial_areas
    accepted_index, cut_index = accepted.nonzero()[:, 0].tolist(), cut.nonzero()[:, 0].tolist()
    new_masks = masks.new_empty((num_existing + len(accepted_index), *masks.shape[1:]))
    new_masks[:num_existing] = masks
    new_masks[num_existing:] = False
    for c in cut_index:
        window = existing_windows[c]
        new_masks[c][window] &= owner[window] == nobody
    for k, index in enumerate(accepted_index):
        window = pasted_windows[index]
        new_masks[num_existing + k][window] = owner[window] == index
    areas = torch.cat((existing_areas, pasted_areas[accepted_index]))
    changed_boxes = _tight_boxes_in_windows(
        new_masks, cut_index + list(range(num_existing, len(new_masks))),
        [existing_windows[c] for c in cut_index] + [pasted_windows[index] for index in accepted_index])
    return PasteResult(new_masks, accepted, cut, areas, owner != nobody, changed_boxes)


def _range(value: Union[float, Sequence[float]], center: float, name: str) -> Tuple[float, float]:
    """A jitter strength ``v`` as the range ``(center - v, center + v)`` (lower end at least 0 for factors); a pair
    is taken as the range."""
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
    """One draw from U(low, high) with torch's global (CPU) generator."""
    return low + (high - low) * torch.rand(()).item()


@MODELS.register_module()
class TwoViewAugment(nn.Module):
    """Double a training batch into a weak and a strong view.

    Returns ``[weak_1..weak_B, strong_1..strong_B]``: the weak views are the inputs as given (geometric
    augmentation already done by the pipeline, so both views share geometry); the strong views are new data
    samples. Every returned sample's ``gt_instances.masks`` is an (n, H, W) bool tensor on the inputs' device.
    Strong view ``i`` is made from weak view ``i`` in this order, each step with its own random draws (torch's
    global CPU generator, so ``torch.manual_seed`` makes it reproducible on any device):

    1. copy-paste: up to ``max_pastes`` instances of weak view ``j = (i + 1) % B``, in random order, at the same
       position, cropped to both images' valid region (``img_shape``), via :func:`paste_masks`. Accepted objects'
       pixels are copied from weak view ``j``; existing masks are cut and their boxes recomputed tightly, empty
       instances are removed, pasted instances are appended with all their ``gt_instances`` fields (``labels``,
       ``scores``, ``embs``...) and tight boxes of their (cropped, cut) masks. Needs ``gt_instances.masks`` (as
       ``BitmapMasks`` or a tensor, at ``img_shape`` or padded by the preprocessor's ``pad_mask=True``) and the
       same fields in every image.
    2. colour jitter with probability ``jitter_prob``: brightness, contrast, saturation and hue in random order, as
       torchvision's ``ColorJitter``; hue rotates the HSV hue (:func:`adjust_hue`).
    3. grayscale with probability ``grayscale_prob`` (ITU-R 601 luma).
    4. Gaussian blur with probability ``blur_prob``, sigma ~ U(blur_sigma).
    5. random erasings: each ``(p, area_range, aspect_range)`` of ``erasings`` erases, with probability p, one
       rectangle of that area fraction and log-uniform aspect (height / width) with uniform noise in [0, 255] (the
       release's ``value="random"``). Erasing is occlusion noise: masks and boxes are left unchanged, as in the
       release.

    Photometric steps work in place on each image's valid region in [0, 1], in the inputs' channel order (the
    inputs are denormalised with the preprocessor's ``mean``/``std``, then normalised back), so padding is never
    touched; an image no step fires on is copied bit-for-bit. Set a probability to 0 (or ``copy_paste=False``) to
    disable a step.

    Normalisation: inside :class:`FreeSOLODataPreprocessor` (as one of its ``batch_augments``) leave ``mean``,
    ``std`` and ``bgr_to_rgb`` unset: the preprocessor passes its own (:meth:`set_normalization`), so that the
    config holds them once. Standalone, give them here.

    Colour similarity: the preprocessor computes ``color_similarity`` on the batch this returns, so the strong
    views' similarity comes from the augmented strong pixels.

    Args:
        mean (Sequence[Number], optional): The preprocessor's ``mean``; None if the inputs are not normalised or
            if the preprocessor sets it.
        std (Sequence[Number], optional): The preprocessor's ``std``.
        bgr_to_rgb (bool, optional): The preprocessor's ``bgr_to_rgb``: True if the inputs are RGB, False if BGR.
            None: set by the preprocessor (True standalone).
        brightness, contrast, saturation (float | tuple): Jitter strength ``v`` (factor ~ U(max(0, 1 - v), 1 + v))
            or a (min, max) factor range. Defaults to 0.4.
        hue (float | tuple): Hue shift ~ U(-v, v) turns, or a (min, max) range. Defaults to 0.1.
        jitter_prob (float): Defaults to 0.8.
        grayscale_prob (float): Defaults to 0.2.
        blur_prob (float): Defaults to 0.5.
        blur_sigma (tuple[float, float]): Defaults to (0.1, 2.0).
        erasings (Sequence[tuple]): ``(p, (min_area, max_area), (min_aspect, max_aspect))`` per erasing; the
            release's three by default.
        copy_paste (bool): Defaults to True.
        max_pastes (int, optional): At most this many instances pasted per image; None pastes all.
        paste_overlap_thr (float): A pasted object covering at least this fraction of an existing mask is dropped.
            Defaults to 0.5.
    """

    def __init__(self,
                 mean: Optional[Sequence[Number]] = None,
                 std: Optional[Sequence[Number]] = None,
                 bgr_to_rgb: Optional[bool] = None,
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
        # [0, 1] colours = input * scale + shift, per channel in the inputs' order (RGB, or BGR if not bgr_to_rgb)
        self.register_buffer('scale', torch.ones(3, 1, 1), False)
        self.register_buffer('shift', torch.zeros(3, 1, 1), False)
        self.normalization = None
        self.bgr_to_rgb = True
        if mean is not None or std is not None or bgr_to_rgb is not None:
            self.set_normalization(mean, std, True if bgr_to_rgb is None else bgr_to_rgb)
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
        self.erasings = [(p, tuple(area), tuple(aspect)) for p, area, aspect in erasings]
        self.copy_paste = copy_paste
        self.max_pastes = max_pastes
        self.paste_overlap_thr = paste_overlap_thr

    def set_normalization(self, mean: Optional[Sequence[Number]], std: Optional[Sequence[Number]],
                          bgr_to_rgb: bool, source: str = 'TwoViewAugment') -> None:
        """Set how the inputs were normalised: ``(x - mean) / std`` on RGB (``bgr_to_rgb=True``) or BGR inputs.

        Called by :class:`FreeSOLODataPreprocessor` with its own settings; a second, different setting (a config
        that gives the augment other values than its preprocessor) raises an error.
        """
        if (mean is None) != (std is None):
            raise ValueError('give both mean and std, or neither')

        def as_float32(values):  # the preprocessor holds them as float32 buffers
            return None if values is None else tuple(torch.as_tensor(values, dtype=torch.float32).flatten().tolist())

        setting = (as_float32(mean), as_float32(std), bool(bgr_to_rgb))
        if self.normalization is not None and setting != self.normalization:
            raise ValueError(f'TwoViewAugment was given mean/std/bgr_to_rgb {self.normalization}, but {source} '
                             f'normalises with {setting}: leave them unset in the augment, the preprocessor passes '
                             'its own')
        self.normalization = setting
        self.bgr_to_rgb = bool(bgr_to_rgb)
        if mean is not None:
            mean = torch.tensor(setting[0]).view(-1, 1, 1)
            std = torch.tensor(setting[1]).view(-1, 1, 1)
            self.scale.copy_(std / 255)
            self.shift.copy_(mean / 255)
        else:
            self.scale.fill_(1 / 255)
            self.shift.zero_()

    def forward(self, inputs: Tensor, data_samples: List[DetDataSample]) -> Tuple[Tensor, List[DetDataSample]]:
        """Return ``(2B, C, H, W)`` inputs and ``2B`` data samples, weak views first.

        Args:
            inputs (Tensor): (B, 3, H, W) normalised, padded images.
            data_samples (list[DetDataSample]): With ``img_shape`` and ``gt_instances`` (with ``masks`` for
                copy-paste); their masks become bool tensors on the inputs' device.
        """
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'TwoViewAugment needs (B, 3, H, W) colour images, got {tuple(inputs.shape)}')
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError('TwoViewAugment needs one data sample per image')
        for sample in data_samples:
            gt = sample.gt_instances
            if 'masks' in gt:
                gt.masks = masks_as_tensor(gt.masks, inputs.device)
        num_images = len(inputs)
        pasting = self.copy_paste and num_images > 1
        # each image's mask windows, once: its own paste reads them, and so does the paste from it
        windows = [_windows(sample.gt_instances.masks) if 'masks' in sample.gt_instances else None
                   for sample in data_samples] if pasting else None
        both_views = torch.cat((inputs, inputs))
        strong_inputs = both_views[num_images:]
        strong_samples = [_copy_sample(sample) for sample in data_samples]
        for i, sample in enumerate(strong_samples):
            if pasting:
                j = (i + 1) % num_images
                sample.gt_instances = self._copy_paste(strong_inputs[i], sample, inputs[j], data_samples[j],
                                                       windows[i], windows[j])
            height, width = sample.img_shape[:2]
            self._photometric(strong_inputs[i, :, :height, :width])
        return both_views, list(data_samples) + strong_samples

    def _copy_paste(self, image: Tensor, sample: DetDataSample, src_image: Tensor, src_sample: DetDataSample,
                    windows: Optional[List[Optional[Window]]] = None,
                    src_windows: Optional[List[Optional[Window]]] = None) -> InstanceData:
        """Paste instances of ``src`` into ``image`` (in place) and return the strong view's instances (see the
        class docstring, step 1). ``windows`` and ``src_windows``: the masks' windows (``_windows``), if known."""
        gt, src_gt = sample.gt_instances, src_sample.gt_instances
        for instances in (gt, src_gt):
            if 'masks' not in instances:
                raise TypeError('copy-paste needs gt_instances.masks (BitmapMasks or a tensor), got none')
        if set(gt.keys()) != set(src_gt.keys()):
            raise ValueError('copy-paste needs the same gt_instances fields in every image, got '
                             f'{sorted(gt.keys())} and {sorted(src_gt.keys())}')
        if len(src_gt) == 0:
            return gt
        masks = gt.masks
        mask_h, mask_w = masks.shape[-2:]
        order = torch.randperm(len(src_gt))[:self.max_pastes].to(image.device)
        src_masks = src_gt.masks
        crop_h = min(mask_h, src_masks.shape[1], sample.img_shape[0], src_sample.img_shape[0])
        crop_w = min(mask_w, src_masks.shape[2], sample.img_shape[1], src_sample.img_shape[1])
        if src_masks.shape[1:] == (mask_h, mask_w) and src_windows is not None:
            pasted = [src_masks[index] for index in order.tolist()]  # views: read only in their clipped windows
        elif src_masks.shape[1:] == (mask_h, mask_w):
            pasted = src_masks[order]
            pasted[:, crop_h:] = False
            pasted[:, :, crop_w:] = False
        else:
            pasted = masks.new_zeros((len(order), mask_h, mask_w))
            pasted[:, :crop_h, :crop_w] = src_masks[order, :crop_h, :crop_w]

        pasted_windows = None if src_windows is None else [
            _clipped(src_windows[index], crop_h, crop_w) for index in order.tolist()]
        new_masks, accepted, cut, areas, union, changed_boxes = paste_masks(
            masks, pasted, self.paste_overlap_thr, windows=windows, pasted_windows=pasted_windows)
        num_accepted = len(new_masks) - len(masks)
        if num_accepted == 0:
            return gt
        region = image[:, :mask_h, :mask_w]
        torch.where(union, src_image[:, :mask_h, :mask_w], region, out=region)

        merged = InstanceData.cat([_without_masks(gt), _without_masks(src_gt)[order[accepted]]])
        if 'bboxes' in merged:
            changed = torch.cat((cut, accepted.new_ones(num_accepted)))
            bboxes = merged.bboxes
            is_box_type = isinstance(bboxes, BaseBoxes)
            boxes = (bboxes.tensor if is_box_type else bboxes).clone()
            boxes[changed] = changed_boxes.to(boxes)
            merged.bboxes = type(bboxes)(boxes) if is_box_type else boxes
        not_empty = areas > 0
        if not bool(not_empty.all()):
            merged, new_masks = merged[not_empty], new_masks[not_empty]
        merged.masks = new_masks
        return merged

    def _photometric(self, image: Tensor) -> None:
        """Steps 2-5 on one (3, h, w) normalised valid region, in place; untouched if no step fires."""
        steps, bgr = [], not self.bgr_to_rgb
        if torch.rand(()).item() < self.jitter_prob:
            steps += [self._jitter_step(k) for k in torch.randperm(4).tolist()]
        if torch.rand(()).item() < self.grayscale_prob:
            steps.append(lambda x: x.copy_(_luma(x, bgr).expand_as(x)))
        if torch.rand(()).item() < self.blur_prob:
            sigma = _uniform(*self.blur_sigma)
            steps.append(lambda x: gaussian_blur(x, sigma).clamp_(0, 1))
        for prob, area_range, aspect_range in self.erasings:
            if torch.rand(()).item() < prob:
                steps.append(self._erase_step(image.shape[-2:], area_range, aspect_range, bgr))
        steps = [step for step in steps if step is not None]
        if not steps:
            return
        # in place, in the inputs' channel order (the steps know it): no working copy, no flip and back
        colours = image.mul_(self.scale).add_(self.shift)  # in [0, 1]
        for step in steps:
            colours = step(colours)
        colours.sub_(self.shift).div_(self.scale)
        if colours is not image:
            image.copy_(colours)

    def _jitter_step(self, kind: int):
        """Colour jitter step ``kind`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with a fresh random factor;
        x in [0, 1] in the inputs' channel order, updated in place where possible."""
        bgr = not self.bgr_to_rgb
        if kind == 0:
            factor = _uniform(*self.brightness)
            return lambda x: x.mul_(factor).clamp_(0, 1)
        if kind == 1:
            factor = _uniform(*self.contrast)
            return lambda x: _blend_(x, _luma(x, bgr).mean(), factor)
        if kind == 2:
            factor = _uniform(*self.saturation)
            return lambda x: _blend_(x, _luma(x, bgr), factor)
        shift = _uniform(*self.hue)
        return lambda x: adjust_hue(x, shift, bgr).clamp_(0, 1)

    @staticmethod
    def _erase_step(size: Tuple[int, int], area_range: Tuple[float, float], aspect_range: Tuple[float, float],
                    bgr: bool = False):
        """An erasing step with a random rectangle (10 tries to fit, as torchvision) of noise drawn in RGB order
        (written to a BGR image if ``bgr``), or None if none fits."""
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
            noise = torch.rand((3, erase_h, erase_w), dtype=x.dtype, device=x.device)
            x[:, top:top + erase_h, left:left + erase_w] = noise.flip(0) if bgr else noise
            return x

        return erase


def _blend_(image: Tensor, other: Tensor, factor: float) -> Tensor:
    """``factor * image + (1 - factor) * other`` clamped to [0, 1], in place (``other`` computed before)."""
    return image.mul_(factor).add_(other, alpha=1 - factor).clamp_(0, 1)


def _without_masks(instances: InstanceData) -> InstanceData:
    """A shallow copy of ``instances`` without its ``masks`` field."""
    return InstanceData(metainfo=instances.metainfo, **{k: v for k, v in instances.items() if k != 'masks'})


def _copy_sample(sample: DetDataSample) -> DetDataSample:
    """A deep copy of ``sample`` that shares its gt masks tensor (never written in place) instead of copying it."""
    gt = sample.gt_instances
    masks = gt.get('masks')
    if masks is not None:
        del gt.masks
    try:
        copied = copy.deepcopy(sample)
    finally:
        if masks is not None:
            gt.masks = masks
    if masks is not None:
        copied.gt_instances.masks = masks
    return copied
