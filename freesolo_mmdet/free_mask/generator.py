"""Free Mask: coarse object masks from self-supervised features, without training.

FreeSOLO (CVPR 2022), stage 1; see section 1 of ``docs/freesolo-spec.md``. Every location of a
bilinear feature pyramid is a query; its cosine-similarity map over the C5 feature map, min-max
normalised, is a soft mask. Masks are scored by maskness, de-duplicated by matrix NMS and filtered.
"""
import math
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.layers import mask_matrix_nms
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType, OptMultiConfig
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor

from freesolo_mmdet.utils.mask_ops import mask_projections
from .components import split_components
from .refine import grabcut_refine_all

__all__ = ['FreeMaskGenerator', 'pyramid_queries', 'soft_masks', 'maskness', 'resize_embedding', 'valid_feature_region']


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
    sims.sub_(sims.min(dim=1, keepdim=True).values)  # in place: same values, no (N, H*W) temporaries
    sims.div_(sims.max(dim=1, keepdim=True).values.clamp(min=eps))
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


def resize_embedding(vectors: Tensor, emb_dim: Optional[int], mode: str = 'linear') -> Tensor:
    """(n, E) -> (n, emb_dim) by resizing each vector as a 1-d signal along its channels (``F.interpolate``
    with ``mode``); ``emb_dim`` None returns the vectors unchanged."""
    if emb_dim is None:
        return vectors
    return F.interpolate(vectors[:, None], size=emb_dim, mode=mode)[:, 0]


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
        input_scales (Sequence[float]): resize factors of the input image. The spec runs the backbone
            once, ``(1.0, )``. With more factors, e.g. ``(1.0, 2.0)``, the backbone also sees the image
            enlarged, so that small objects span several feature cells; the candidates of every scale
            are resampled onto the grid of the finest one (:meth:`masks_from_levels`) and compete in
            one matrix NMS. An option, not the paper's method (docs/free_mask_demo.md measures it).
        tau (float): soft-mask threshold at feature resolution.
        nms_kernel (str): matrix NMS kernel, 'gaussian' or 'linear'.
        nms_sigma (float): Gaussian kernel sigma.
        top_k (int): masks kept by decayed score after matrix NMS.
        mask_thr (float): threshold of the soft masks resized to the original image.
        sky_filter (float, optional): keep a mask only if the mean index of the rows it
            occupies (each occupied row counted once, not the pixel centroid) is
            > sky_filter * image height (strictly; drops sky-like masks). None = off.
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
        refine_iters (int, optional): refine each full-resolution mask with this many GrabCut iterations
            on the image's colours (:func:`~freesolo_mmdet.free_mask.refine.grabcut_refine`), then apply
            the filters again. None (the spec) = off. Only :meth:`predict` refines: it recovers the image
            from the normalised input with the data preprocessor's mean and std.
        split_components (float, optional): after refinement, each mask becomes one mask per 8-connected
            component of at least this share of its largest one, with the mask's score and embedding
            (:func:`~freesolo_mmdet.free_mask.components.split_components`); the filters apply again, and
            an image may then have more than ``top_k`` masks. None (the spec) = off. Only :meth:`predict`.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 backbone: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 feature_level: int = -1,
                 query_scales: Sequence[float] = (1.0, 0.5, 0.25),
                 input_scales: Sequence[float] = (1.0, ),
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
                 refine_iters: Optional[int] = None,
                 split_components: Optional[float] = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if nms_kernel not in ('gaussian', 'linear'):
            raise ValueError(f"nms_kernel must be 'gaussian' or 'linear', got {nms_kernel!r}")
        if not query_scales or any(s <= 0 for s in query_scales):
            raise ValueError(f'query_scales must be positive factors, got {query_scales}')
        if not input_scales or any(s <= 0 for s in input_scales):
            raise ValueError(f'input_scales must be positive factors, got {input_scales}')
        if split_components is not None and not 0 <= split_components <= 1:
            raise ValueError(f'split_components must be a share in [0, 1] or None, got {split_components}')
        self.backbone = MODELS.build(backbone) if backbone is not None else None
        self.feature_level = feature_level
        self.query_scales = tuple(query_scales)
        self.input_scales = tuple(input_scales)
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
        self.refine_iters = refine_iters
        self.split_components = split_components

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
        levels = []  # per input scale: (features (B, E, H, W), shape of the scaled input)
        for factor in self.input_scales:
            scaled = inputs if factor == 1 else F.interpolate(inputs, scale_factor=factor, mode='bilinear',
                                                              align_corners=False)
            levels.append((self.backbone(scaled)[self.feature_level], scaled.shape[-2:], factor))
        results = []
        for i in range(len(inputs)):
            meta = data_samples[i].metainfo if data_samples is not None else {}
            img_shape = tuple(meta.get('img_shape', inputs.shape[-2:]))[:2]
            ori_shape = tuple(meta.get('ori_shape', img_shape))[:2]
            feats, fractions = [], []
            for feats_of_scale, input_shape, factor in levels:
                scaled_shape = tuple(min(side * factor, limit) for side, limit in zip(img_shape, input_shape))
                (rows, cols), fraction = valid_feature_region(scaled_shape, input_shape,
                                                              feats_of_scale.shape[-2:])
                feats.append(feats_of_scale[i, :, :rows, :cols])
                fractions.append(fraction)
            if len(feats) == 1:
                result = self.masks_from_features(feats[0], ori_shape, fractions[0])
            else:
                result = self.masks_from_levels(feats, ori_shape, fractions)
            if self.refine_iters and len(result):
                result = self.refine(result, self._image(inputs[i], img_shape, ori_shape))
            if self.split_components is not None and len(result):
                result = self.split(result)
            results.append(result)
        return results

    def _image(self, normalised: Tensor, img_shape: Tuple[int, int], ori_shape: Tuple[int, int]) -> np.ndarray:
        """(3, H_in, W_in) normalised input -> (h, w, 3) uint8 image at ``ori_shape`` (input channel order)."""
        mean = getattr(self.data_preprocessor, 'mean', None)
        std = getattr(self.data_preprocessor, 'std', None)
        if mean is None or std is None:
            raise RuntimeError('refine_iters needs a data preprocessor with mean and std to recover the image')
        pixels = normalised[:, :int(img_shape[0]), :int(img_shape[1])] * std.view(-1, 1, 1) + mean.view(-1, 1, 1)
        image = pixels.clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        return cv2.resize(image, (int(ori_shape[1]), int(ori_shape[0])), interpolation=cv2.INTER_LINEAR)

    def refine(self, results: InstanceData, image: np.ndarray) -> InstanceData:
        """Each mask refined by GrabCut on ``image`` ((h, w, 3) uint8 at the masks' size), then the
        filters applied again (a refined mask may shrink below them)."""
        masks = results.masks.cpu().numpy()
        refined = grabcut_refine_all(image, masks, iters=self.refine_iters)
        results.masks = torch.from_numpy(refined).to(results.masks.device)
        return results[self.filter_masks(results)]

    def split(self, results: InstanceData) -> InstanceData:
        """Each mask replaced by its components (``split_components``), which keep its other fields;
        then the filters."""
        sources, pieces = split_components(results.masks.cpu().numpy(), self.split_components)
        split = results[torch.from_numpy(sources).to(results.masks.device)]
        split.masks = torch.from_numpy(pieces).to(results.masks.device)
        return split[self.filter_masks(split)]

    def masks_from_features(self, feat: Tensor, ori_shape: Tuple[int, int],
                            image_fraction: Tuple[float, float] = (1.0, 1.0)) -> InstanceData:
        """Free Masks of one feature map.

        Soft masks, NMS and maskness work at feature resolution, (N, H, W) with N = number of
        queries; only the top_k masks kept by NMS are resized to ``ori_shape``, one at a time
        (:meth:`upsample_and_filter`), so that full resolution costs one float map plus the bool
        masks that pass the filters.

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
        return self._select(soft_masks(queries, feat), queries, ori_shape, image_fraction)

    def masks_from_levels(self, feats: Sequence[Tensor], ori_shape: Tuple[int, int],
                          image_fractions: Sequence[Tuple[float, float]]) -> InstanceData:
        """Free Masks of several feature maps of one image (an input pyramid), merged by one matrix NMS.

        Each level's soft masks are computed on its own map (queries from its own pyramid), then
        resampled bilinearly onto one grid that spans exactly the image, with the cell count of the
        finest level; thresholds, maskness, NMS and filters then work as in :meth:`masks_from_features`.

        Args:
            feats (Sequence[Tensor]): (E, H_l, W_l) features of the image at each input scale,
                cropped to the cells that see the image.
            ori_shape (tuple): (h, w) of the output masks.
            image_fractions (Sequence[tuple]): per level, the share of its map's extent covered by
                the image (:func:`valid_feature_region`).

        Returns:
            InstanceData: as :meth:`masks_from_features`.
        """
        finest = max(range(len(feats)), key=lambda k: feats[k].shape[-2] * feats[k].shape[-1])
        grid = tuple(max(1, round(cells * fraction))
                     for cells, fraction in zip(feats[finest].shape[-2:], image_fractions[finest]))
        softs, all_queries = [], []
        for feat, fraction in zip(feats, image_fractions):
            queries = F.normalize(pyramid_queries(feat, self.query_scales), dim=1)
            soft = soft_masks(queries, feat)
            size = tuple(math.ceil(g / f - 1e-6) for g, f in zip(grid, fraction))  # the image part spans grid
            soft = F.interpolate(soft[None], size=size, mode='bilinear', align_corners=False)[0]
            softs.append(soft[:, :grid[0], :grid[1]])
            all_queries.append(queries)
        return self._select(torch.cat(softs), torch.cat(all_queries), ori_shape, (1.0, 1.0))

    def _select(self, soft: Tensor, queries: Tensor, ori_shape: Tuple[int, int],
                image_fraction: Tuple[float, float]) -> InstanceData:
        """Threshold, maskness, matrix NMS, upsampling and filters of (N, H, W) soft masks of the
        (N, E) unit queries; see :meth:`masks_from_features`."""
        binary = soft >= self.tau
        keep = binary.view(torch.uint8).flatten(1).sum(1, dtype=torch.int32) > 1  # bytes sum faster than bools
        soft, binary, queries = soft[keep], binary[keep], queries[keep]
        scores, labels, _, kept = mask_matrix_nms(
            binary, binary.new_zeros(len(binary), dtype=torch.long), maskness(soft, binary),
            max_num=self.top_k, kernel=self.nms_kernel, sigma=self.nms_sigma)
        keep, masks = self.upsample_and_filter(soft[kept], scores, ori_shape, image_fraction)
        return InstanceData(masks=masks, scores=scores[keep], labels=labels[keep], embs=self.embed(queries[kept][keep]))

    def embed(self, queries: Tensor) -> Tensor:
        """(n, E) unit query vectors -> (n, emb_dim) by resizing along channels (see class doc)."""
        return resize_embedding(queries, self.emb_dim, self.emb_mode)

    def filter_masks(self, results: InstanceData) -> Tensor:
        """(n, ) bool: non-empty masks that pass the switched-on filters.

        Args:
            results (InstanceData): ``masks`` (n, h, w) bool and ``scores`` (n, ).
        """
        return self._passes_filters(*mask_projections(results.masks), results.scores)

    def _passes_filters(self, rows: Tensor, cols: Tensor, scores: Tensor) -> Tensor:
        """The filters of :meth:`filter_masks` from the masks' projections.

        Args:
            rows (Tensor): (n, h) bool, rows a mask occupies.
            cols (Tensor): (n, w) bool, columns a mask occupies.
            scores (Tensor): (n, ) decayed maskness.

        Returns:
            Tensor: (n, ) bool.
        """
        height, width = rows.shape[1], cols.shape[1]
        num_rows = rows.sum(1)
        keep = num_rows > 0
        if self.min_score is not None:
            keep &= scores >= self.min_score
        if self.sky_filter is not None:  # spec 1.9: mean of the occupied rows' indices, each once
            indices = torch.arange(height, device=rows.device, dtype=torch.float64)
            mean_row = (rows * indices).sum(1) / num_rows.clamp(min=1)
            keep &= mean_row > self.sky_filter * height
        if self.width_filter is not None:
            box_width = width - cols.flip(1).int().argmax(1) - cols.int().argmax(1)
            keep &= box_width < self.width_filter * width
        return keep

    def upsample_and_filter(self, soft: Tensor, scores: Tensor, ori_shape: Tuple[int, int],
                            image_fraction: Tuple[float, float] = (1.0, 1.0)) -> Tuple[Tensor, Tensor]:
        """Full-resolution masks that pass the filters, made one at a time.

        Each soft mask is resized bilinearly so that the image part spans ``ori_shape``, cropped,
        thresholded at ``mask_thr`` into the next free slot of one (k, h, w) bool buffer and
        filtered (:meth:`filter_masks`); a mask that fails is overwritten by the next one. Peak
        memory: one (h', w') float map plus the kept masks, instead of k float maps.

        Args:
            soft (Tensor): (k, H, W) soft masks at feature resolution.
            scores (Tensor): (k, ) their decayed maskness.
            ori_shape (tuple): (h, w) of the output masks.
            image_fraction (tuple): share of the feature map's extent (rows, cols) covered by
                the image; the part past it is cropped after upsampling.

        Returns:
            tuple[Tensor, Tensor]: (k, ) bool, which masks pass; (n, h, w) bool masks of those,
            in order (a view of the buffer).
        """
        height, width = ori_shape
        size = (math.ceil(height / image_fraction[0] - 1e-6), math.ceil(width / image_fraction[1] - 1e-6))
        masks = torch.empty((len(soft), height, width), dtype=torch.bool, device=soft.device)
        keep = torch.zeros(len(soft), dtype=torch.bool, device=soft.device)
        # the score filter needs no mask: a mask it drops is never upsampled (one host sync for all)
        candidates = range(len(soft)) if self.min_score is None else (scores >= self.min_score).nonzero()[:, 0].tolist()
        count = 0
        for index in candidates:
            full = F.interpolate(soft[index][None, None], size=size, mode='bilinear', align_corners=False)
            mask = torch.ge(full[0, 0, :height, :width], self.mask_thr, out=masks[count])
            del full
            rows, cols = mask_projections(mask[None])
            keep[index] = self._passes_filters(rows, cols, scores[index][None])[0]
            count += int(keep[index])
        return keep, masks[:count]
