"""Free Mask: coarse object masks from self-supervised features, without training.

FreeSOLO (CVPR 2022), stage 1; see section 1 of ``docs/freesolo-spec.md``. Every location of a
bilinear feature pyramid is a query; its cosine-similarity map over the C5 feature map, min-max
normalised, is a soft mask. Masks are scored by maskness, de-duplicated by matrix NMS and filtered.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import mask_matrix_nms
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType, OptMultiConfig
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor

__all__ = ['FreeMaskGenerator', 'pyramid_queries', 'soft_masks', 'maskness', 'valid_feature_region']


def pyramid_queries(feat: Tensor, scales: Sequence[float]) -> Tensor:
    """Queries from a bilinear pyramid of one feature map.

    Args:
        feat (Tensor): (E, H, W).
        scales (Sequence[float]): resize factors; level s has size
            (max(1, floor(H * s)), max(1, floor(W * s))).

    Returns:
        Tensor: (N, E), N = sum over levels of h_s * w_s; level by level, row-major.
    """
    height, width = feat.shape[-2:]
    levels = []
    for scale in scales:
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        level = F.interpolate(feat[None], size=size, mode='bilinear', align_corners=False)[0]
        levels.append(level.flatten(1).t())
    return torch.cat(levels)


def soft_masks(queries: Tensor, keys: Tensor, eps: float = 1e-6) -> Tensor:
    """Cosine-similarity maps of the queries over the keys, each min-max normalised to [0, 1].

    Args:
        queries (Tensor): (N, E); L2-normalised here.
        keys (Tensor): (E, H, W); L2-normalised over E here.

    Returns:
        Tensor: (N, H, W). A constant map becomes all zeros.
    """
    queries = F.normalize(queries, dim=1)
    sims = queries @ F.normalize(keys.flatten(1), dim=0)
    sims = sims - sims.min(dim=1, keepdim=True).values
    sims = sims / sims.max(dim=1, keepdim=True).values.clamp(min=eps)
    return sims.view(len(queries), *keys.shape[-2:])


def maskness(soft: Tensor, binary: Tensor) -> Tensor:
    """Mean soft value over each mask's foreground: sum(soft * bin) / sum(bin).

    Args:
        soft (Tensor): (N, H, W) in [0, 1].
        binary (Tensor): (N, H, W) bool.

    Returns:
        Tensor: (N, ); 0 for an empty mask.
    """
    binary = binary.flatten(1).float()
    return (soft.flatten(1) * binary).sum(1) / binary.sum(1).clamp(min=1)


def valid_feature_region(img_shape: Tuple[int, int], input_shape: Tuple[int, int],
                         feat_shape: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """Feature cells that see the image (not the batch padding) and the image's share of them.

    Args:
        img_shape (tuple): (h, w) of the resized image inside the padded input.
        input_shape (tuple): (H_in, W_in) of the padded batch input.
        feat_shape (tuple): (H, W) of the feature map of the batch input.

    Returns:
        tuple: ((rows, cols) of valid cells, (fraction_h, fraction_w)): the image covers this
        fraction of the valid cells' extent; the rest lies past its bottom/right border.
    """
    cells, fractions = [], []
    for size, size_in, size_feat in zip(img_shape, input_shape, feat_shape):
        stride = size_in / size_feat
        num = min(size_feat, max(1, math.ceil(size / stride - 1e-6)))
        cells.append(num)
        fractions.append(min(1.0, size / (num * stride)))
    return tuple(cells), tuple(fractions)


@MODELS.register_module()
class FreeMaskGenerator(BaseModel):
    """Free Mask: class-agnostic coarse masks from a frozen self-supervised backbone.

    Args:
        backbone (dict, optional): backbone config; None for features-only use
            (:meth:`masks_from_features`).
        data_preprocessor (dict, optional): e.g. ``DetDataPreprocessor`` with the ImageNet
            mean/std and ``bgr_to_rgb=True``.
        feature_level (int): index into the backbone's outputs; -1 = the last (C5).
        query_scales (Sequence[float]): pyramid resize factors of the queries.
        tau (float): soft-mask threshold at feature resolution.
        nms_kernel (str): matrix NMS kernel, 'gaussian' or 'linear'.
        nms_sigma (float): Gaussian kernel sigma.
        top_k (int): masks kept by decayed score after matrix NMS.
        mask_thr (float): threshold of the soft masks resized to the original image.
        sky_filter (float, optional): keep a mask only if its mean row index is
            >= sky_filter * image height (drops sky-like masks). None = off.
        width_filter (float, optional): keep a mask only if its box width is
            < width_filter * image width. None = off.
        min_score (float, optional): keep a mask only if its decayed maskness is >= this.
            None = off.
        emb_dim (int, optional): length of the semantic embedding. The mask's query vector
            (L2-normalised, length E) is treated as a 1-d signal and resized to emb_dim with
            ``F.interpolate(mode=emb_mode)`` along the channel axis, as the authors' release
            does with linear interpolation; 'area' instead averages groups of channels.
            The result is not re-normalised. None = keep all E channels.
        emb_mode (str): interpolation mode for the embedding ('linear', 'area', 'nearest').
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 backbone: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 feature_level: int = -1,
                 query_scales: Sequence[float] = (1.0, 0.5, 0.25),
                 tau: float = 0.5,
                 nms_kernel: str = 'gaussian',
                 nms_sigma: float = 2.0,
                 top_k: int = 20,
                 mask_thr: float = 0.5,
                 sky_filter: Optional[float] = 0.2,
                 width_filter: Optional[float] = 0.95,
                 min_score: Optional[float] = 0.7,
                 emb_dim: Optional[int] = 128,
                 emb_mode: str = 'linear',
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if nms_kernel not in ('gaussian', 'linear'):
            raise ValueError(f"nms_kernel must be 'gaussian' or 'linear', got {nms_kernel!r}")
        if not query_scales or any(s <= 0 for s in query_scales):
            raise ValueError(f'query_scales must be positive factors, got {query_scales}')
        self.backbone = MODELS.build(backbone) if backbone is not None else None
        self.feature_level = feature_level
        self.query_scales = tuple(query_scales)
        self.tau = tau
        self.nms_kernel = nms_kernel
        self.nms_sigma = nms_sigma
        self.top_k = top_k
        self.mask_thr = mask_thr
        self.sky_filter = sky_filter
        self.width_filter = width_filter
        self.min_score = min_score
        self.emb_dim = emb_dim
        self.emb_mode = emb_mode

    def forward(self, inputs: Tensor, data_samples: Optional[SampleList] = None,
                mode: str = 'predict') -> List[InstanceData]:
        """Only ``mode='predict'``: Free Mask has nothing to train."""
        if mode != 'predict':
            raise ValueError(f"FreeMaskGenerator only supports mode='predict', got {mode!r}")
        return self.predict(inputs, data_samples)

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: Optional[SampleList] = None) -> List[InstanceData]:
        """Free Masks of a (padded) batch.

        Args:
            inputs (Tensor): (B, 3, H_in, W_in), normalised by the data preprocessor.
            data_samples (list, optional): metainfo with ``img_shape`` (resized, unpadded) and
                ``ori_shape``; None means unpadded inputs at original size.

        Returns:
            list[InstanceData]: per image ``masks`` (n, h, w) bool at ``ori_shape``,
            ``scores`` (n, ), ``embs`` (n, D), ``labels`` (n, ) zeros.
        """
        if self.backbone is None:
            raise RuntimeError('FreeMaskGenerator was built without a backbone; '
                               'use masks_from_features on feature maps instead.')
        feats = self.backbone(inputs)[self.feature_level]
        results = []
        for i, feat in enumerate(feats):
            meta = data_samples[i].metainfo if data_samples is not None else {}
            img_shape = tuple(meta.get('img_shape', inputs.shape[-2:]))[:2]
            ori_shape = tuple(meta.get('ori_shape', img_shape))[:2]
            (rows, cols), fraction = valid_feature_region(img_shape, inputs.shape[-2:], feat.shape[-2:])
            results.append(self.masks_from_features(feat[:, :rows, :cols], ori_shape, fraction))
        return results

    def masks_from_features(self, feat: Tensor, ori_shape: Tuple[int, int],
                            image_fraction: Tuple[float, float] = (1.0, 1.0)) -> InstanceData:
        """Free Masks of one feature map.

        Soft masks, NMS and maskness work at feature resolution, (N, H, W) with N = number of
        queries; only the top_k masks kept by NMS are resized to ``ori_shape``.

        Args:
            feat (Tensor): (E, H, W) features of one image.
            ori_shape (tuple): (h, w) of the output masks.
            image_fraction (tuple): share of the feature map's extent (rows, cols) covered by
                the image; the part past it is cropped after upsampling.

        Returns:
            InstanceData: ``masks`` (n, h, w) bool, ``scores`` (n, ) decayed maskness,
            ``embs`` (n, D), ``labels`` (n, ) zeros; n <= top_k, sorted by score.
        """
        queries = F.normalize(pyramid_queries(feat, self.query_scales), dim=1)
        soft = soft_masks(queries, feat)
        binary = soft >= self.tau
        keep = binary.flatten(1).sum(1) > 1
        soft, binary, queries = soft[keep], binary[keep], queries[keep]
        scores, labels, _, kept = mask_matrix_nms(
            binary, binary.new_zeros(len(binary), dtype=torch.long), maskness(soft, binary),
            max_num=self.top_k, kernel=self.nms_kernel, sigma=self.nms_sigma)
        masks = self._upsample(soft[kept], ori_shape, image_fraction) >= self.mask_thr
        results = InstanceData(masks=masks, scores=scores, labels=labels, embs=self.embed(queries[kept]))
        return results[self.filter_masks(results)]

    def embed(self, queries: Tensor) -> Tensor:
        """(n, E) unit query vectors -> (n, emb_dim) by resizing along channels (see class doc)."""
        if self.emb_dim is None:
            return queries
        return F.interpolate(queries[:, None], size=self.emb_dim, mode=self.emb_mode)[:, 0]

    def filter_masks(self, results: InstanceData) -> Tensor:
        """(n, ) bool: non-empty masks that pass the switched-on filters."""
        masks = results.masks
        height, width = masks.shape[-2:]
        row_counts = masks.sum(2)  # (n, H): one pass over the full-resolution masks
        area = row_counts.sum(1)
        keep = area > 0
        if self.min_score is not None:
            keep &= results.scores >= self.min_score
        if self.sky_filter is not None:
            rows = torch.arange(height, device=masks.device, dtype=torch.float)
            mean_row = (row_counts.float() * rows).sum(1) / area.clamp(min=1)
            keep &= mean_row >= self.sky_filter * height
        if self.width_filter is not None:
            cols = masks.any(1)
            box_width = width - cols.flip(1).int().argmax(1) - cols.int().argmax(1)
            keep &= box_width < self.width_filter * width
        return keep

    @staticmethod
    def _upsample(soft: Tensor, ori_shape: Tuple[int, int], image_fraction: Tuple[float, float]) -> Tensor:
        """(k, H, W) -> (k, h, w): bilinear resize so that the image part spans ori_shape, then crop."""
        height, width = ori_shape
        if len(soft) == 0:
            return soft.new_zeros((0, height, width))
        size = (math.ceil(height / image_fraction[0] - 1e-6), math.ceil(width / image_fraction[1] - 1e-6))
        return F.interpolate(soft[None], size=size, mode='bilinear', align_corners=False)[0, :, :height, :width]
