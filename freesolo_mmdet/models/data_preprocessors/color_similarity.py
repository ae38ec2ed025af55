# Copyright (c) freesolo_mmdet contributors.
"""Data preprocessor that adds the colour similarity used by the pairwise
affinity loss, computed in torch on the inputs' device."""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.utils import unfold_wo_center
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

__all__ = ['rgb_to_lab', 'color_similarity', 'FreeSOLODataPreprocessor']

# sRGB (linear) -> CIE XYZ, and the D65 (2 degree observer) white point, as in
# skimage.color.rgb2lab.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """Convert sRGB to CIE LAB (D65), like ``skimage.color.rgb2lab``.

    Args:
        rgb (Tensor): (..., 3, H, W) sRGB values in [0, 1] (clamped).

    Returns:
        Tensor: (..., 3, H, W) L in [0, 100], a and b roughly in
        [-128, 127].
    """
    rgb = rgb.clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055)**2.4,
                         rgb / 12.92)
    matrix = rgb.new_tensor(_RGB_TO_XYZ)
    white = rgb.new_tensor(_D65_WHITE)
    xyz = torch.einsum('ij,...jhw->...ihw', matrix, linear)
    xyz = (xyz / white[:, None, None]).clamp(min=0)
    f = torch.where(xyz > 0.008856, xyz.pow(1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)),
                       dim=-3)


def color_similarity(lab: Tensor,
                     valid: Tensor,
                     kernel_size: int = 3,
                     dilation: int = 2) -> Tensor:
    """Similarity ``exp(-0.5 * ||lab_i - lab_j||)`` of every pixel i to its
    neighbours j (order of :func:`mmdet.models.utils.unfold_wo_center`).

    Pairs with an invalid centre or neighbour pixel, and neighbours outside
    the image, get 0.

    Args:
        lab (Tensor): (B, 3, H, W) LAB images.
        valid (Tensor): (B, H, W) bool or {0, 1} mask of valid pixels.
        kernel_size (int): Neighbourhood window size. Defaults to 3.
        dilation (int): Neighbourhood dilation. Defaults to 2.

    Returns:
        Tensor: (B, kernel_size**2 - 1, H, W) similarity in [0, 1].
    """
    neighbours = unfold_wo_center(lab, kernel_size, dilation)
    # the distance as the root of a sum over the 3 channels: Tensor.norm over that short, strided dimension is
    # about 10x slower on a CPU
    similarity = torch.exp(-(lab[:, :, None] - neighbours).square().sum(dim=1).sqrt() * 0.5)
    valid = valid[:, None].to(lab.dtype)
    valid_neighbours = unfold_wo_center(valid, kernel_size, dilation)[:, 0]
    return similarity * valid * valid_neighbours


@MODELS.register_module()
class FreeSOLODataPreprocessor(DetDataPreprocessor):
    """:class:`DetDataPreprocessor` that, in training, also stores the colour
    similarity of every image at the mask stride as
    ``data_sample.color_similarity``: (K*K-1, Hp // mask_stride,
    Wp // mask_stride) float32 on the inputs' device, where (Hp, Wp) is the
    padded batch shape.

    The padded batch is average-pooled by ``mask_stride`` and denormalised
    (pooling is linear, so pooling first is exact and cheaper), converted to
    RGB in [0, 1] and then to LAB. Images are assumed to enter as BGR uint8
    (mmdet's ``LoadImageFromFile`` default), so they are RGB after the parent
    iff ``bgr_to_rgb=True``, and are flipped here otherwise. A stride cell
    is valid when its sampled pixel (offset ``mask_stride // 2``, as in
    BoxInst) lies inside ``img_shape`` and above the bottom
    ``int(bottom_pixels_removed * img_h / ori_h)`` rows; pairs touching an
    invalid cell have similarity 0. Ground-truth masks are left untouched.

    ``batch_augments`` with a ``set_normalization`` method (:class:`TwoViewAugment`) are given this
    preprocessor's ``mean``, ``std`` and ``bgr_to_rgb``, so that a config states them once.
    The similarity is computed after the parent's ``batch_augments`` (e.g.
    :class:`TwoViewAugment`), on the inputs they return: a strong view's
    similarity comes from its own augmented pixels (colour-jittered,
    grayscale, blurred, erased, with pasted objects), one per returned data
    sample.

    Args:
        mask_stride (int): Stride of the mask logits. Defaults to 4.
        bottom_pixels_removed (int): Image rows at the bottom of the original
            image treated as invalid (COCO annotation artefact).
            Defaults to 10.
        color_kernel_size (int): Neighbourhood window size. Defaults to 3.
        color_dilation (int): Neighbourhood dilation. Defaults to 2.
        bgr_to_rgb (bool): As in :class:`DetDataPreprocessor`.
        **kwargs: Other arguments of :class:`DetDataPreprocessor`.
    """

    def __init__(self,
                 mask_stride: int = 4,
                 bottom_pixels_removed: int = 10,
                 color_kernel_size: int = 3,
                 color_dilation: int = 2,
                 bgr_to_rgb: bool = False,
                 **kwargs) -> None:
        super().__init__(bgr_to_rgb=bgr_to_rgb, **kwargs)
        for augment in self.batch_augments or []:
            if hasattr(augment, 'set_normalization'):  # TwoViewAugment: this preprocessor's mean, std, order
                mean = self.mean.flatten().tolist() if self._enable_normalize else None
                std = self.std.flatten().tolist() if self._enable_normalize else None
                augment.set_normalization(mean, std, bgr_to_rgb, source=type(self).__name__)
        self.mask_stride = mask_stride
        self.bottom_pixels_removed = bottom_pixels_removed
        self.color_kernel_size = color_kernel_size
        self.color_dilation = color_dilation
        self.outputs_rgb = bgr_to_rgb

    def forward(self, data: dict, training: bool = False) -> dict:
        """Run :class:`DetDataPreprocessor`; in training, add
        ``color_similarity`` to every data sample."""
        data = super().forward(data, training)
        inputs, data_samples = data['inputs'], data['data_samples']
        if training and data_samples is not None:
            similarity = self.get_color_similarity(inputs, data_samples)
            for data_sample, sample_similarity in zip(data_samples,
                                                      similarity):
                data_sample.color_similarity = sample_similarity
        return data

    def get_color_similarity(self, inputs: Tensor,
                             data_samples: List[DetDataSample]) -> Tensor:
        """Colour similarity of a preprocessed batch.

        Args:
            inputs (Tensor): (B, 3, Hp, Wp) normalised, padded images.
            data_samples (list[DetDataSample]): With ``img_shape`` and
                ``ori_shape`` in their metainfo.

        Returns:
            Tensor: (B, K*K-1, Hp // mask_stride, Wp // mask_stride).
        """
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError('colour similarity needs (B, 3, H, W) colour '
                             f'images, got {tuple(inputs.shape)}')
        stride = self.mask_stride
        images = F.avg_pool2d(inputs.float(), stride, stride)
        if self._enable_normalize:
            images = images * self.std + self.mean
        if not self.outputs_rgb:
            images = images.flip(1)
        lab = rgb_to_lab(images / 255)

        heights, widths = [], []
        for data_sample in data_samples:
            img_h, img_w = data_sample.img_shape[:2]
            ori_h = data_sample.ori_shape[0]
            heights.append(img_h -
                           int(self.bottom_pixels_removed * img_h / ori_h))
            widths.append(img_w)
        device = inputs.device
        sampled_h = torch.arange(images.shape[2], device=device)
        sampled_w = torch.arange(images.shape[3], device=device)
        rows_valid = (
            sampled_h * stride + stride // 2
            < torch.tensor(heights, device=device)[:, None])
        cols_valid = (
            sampled_w * stride + stride // 2
            < torch.tensor(widths, device=device)[:, None])
        valid = rows_valid[:, :, None] & cols_valid[:, None, :]
        return color_similarity(lab, valid, self.color_kernel_size,
                                self.color_dilation)
