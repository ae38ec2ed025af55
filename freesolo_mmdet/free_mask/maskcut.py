"""MaskCut: up to N object masks per image by repeated normalised cuts of a patch-affinity graph.

CutLER (Wang et al., CVPR 2023), an alternative stage 1 to Free Mask; see section 7 of ``docs/freesolo-spec.md``.
Written from the paper's description (no code of the CC BY-NC release). Per image:

1. The cells of one backbone feature map are the nodes of a graph; ``W_ij = 1`` if ``cos(f_i, f_j) >= tau``,
   else ``eps`` (the floor keeps the graph connected).
2. Normalised cut: the second-smallest eigenvector ``y`` of ``L = I - D^-1/2 W D^-1/2`` (``torch.linalg.eigh``)
   gives the generalised eigenvector ``x = D^-1/2 y`` of ``(D - W) x = lambda D x``; the nodes are split at the
   mean of ``x``.
3. The foreground is the side that holds the node of largest ``|x|``, swapped for the other side when it holds
   ``>= corner_rule`` of the map's 4 corner cells.
4. The foreground's nodes leave the graph and the cut is repeated, ``num_objects`` times in all.

Removed nodes (and the cells of an image's batch padding) are excluded exactly, not down-weighted: their rows
and columns of ``L`` are zeroed and their diagonal set to 3, above every eigenvalue of a normalised Laplacian
(<= 2), so the two smallest eigenpairs belong to the remaining graph. Every image of a batch therefore has the
same matrix size and one batched ``eigh`` per iteration serves the whole batch.
"""
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType, OptMultiConfig
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor

from .generator import resize_embedding, valid_feature_region

__all__ = ['MaskCutGenerator', 'MaskCutResult', 'patch_affinity', 'maskcut_bipartitions', 'ncut_step']

#: diagonal of ``L`` at an excluded node: above the spectrum [0, 2] of a normalised Laplacian
_EXCLUDED = 3.0
#: a cut must score above this (score 0: no better than any cut of a graph with equal affinities, up to rounding)
_MIN_GAIN = 1e-4
_DTYPES = dict(float32=torch.float32, float64=torch.float64)


class MaskCutResult(NamedTuple):
    """Output of :func:`maskcut_bipartitions` for B images, N = ``num_objects`` iterations, an H x W map.

    Attributes:
        masks (Tensor): (B, N, H, W) bool, the foreground cells taken by each iteration (False where none).
        soft (Tensor): (B, N, H, W) float in [0, 1], the foreground-oriented eigenvector, each side scaled
            separately so that ``soft > 0.5`` on the foreground, ``< 0.5`` on the background (0 at its far end)
            and 0 at excluded cells: ``masks`` is ``soft >= 0.5`` at the cell centres.
        scores (Tensor): (B, N) ``1 - Ncut`` of each cut in [0, 1] (see :func:`ncut_step`); 0 where none.
        found (Tensor): (B, N) bool, whether the iteration made a cut.
    """
    masks: Tensor
    soft: Tensor
    scores: Tensor
    found: Tensor


def patch_affinity(feats: Tensor, tau: float, eps: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Thresholded cosine affinity of every pair of cells.

    Args:
        feats (Tensor): (B, E, n) features of n cells; L2-normalised over E here (a zero vector stays zero,
            cosine 0 with everything).
        tau (float): a pair with cosine >= tau gets affinity 1, any other ``eps``.
        eps (float): the floor affinity, > 0.
        dtype (torch.dtype): of the result.

    Returns:
        Tensor: (B, n, n) symmetric, values in {eps, 1}.
    """
    unit = F.normalize(feats.to(dtype), dim=1)
    cos = unit.transpose(1, 2) @ unit
    close = cos >= tau
    return cos.fill_(eps).masked_fill_(close, 1.0)


def ncut_step(affinity: Tensor, active: Tensor, corners: Tensor,
              corner_rule: Optional[int]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """One normalised cut of the graph of each image's active nodes, all images in one batched ``eigh``.

    Args:
        affinity (Tensor): (B, n, n) from :func:`patch_affinity`.
        active (Tensor): (B, n) bool, the nodes still in the graph.
        corners (Tensor): (B, 4) long, flat indices of each map's corner cells.
        corner_rule (int, optional): swap foreground and background when the foreground holds at least this many
            of the 4 corner cells; None = never.

    Returns:
        tuple[Tensor, Tensor, Tensor, Tensor]: ``fg`` (B, n) bool; ``soft`` (B, n) as in :class:`MaskCutResult`;
        ``score`` (B, ) = ``clamp(1 - Ncut(fg, bg), 0, 1)`` on the active graph, with
        ``Ncut = cut/vol(fg) + cut/vol(bg)``: 1 for sides without a link above ``eps``, 0 for a cut no better
        than any cut of a graph with equal affinities (Ncut = 1); ``ok`` (B, ) bool, whether a cut was made
        (>= 2 active nodes, both sides non-empty, score > 1e-4). Where not ok, ``fg`` and ``soft`` are zero.
    """
    dtype = affinity.dtype
    tiny = torch.finfo(dtype).tiny
    weight = active.to(dtype)
    graph = affinity * weight[:, :, None] * weight[:, None, :]
    degree = graph.sum(2)
    inv_sqrt = torch.where(active, degree.clamp(min=tiny).rsqrt(), 0)
    laplacian = graph.mul_(-inv_sqrt[:, :, None]).mul_(inv_sqrt[:, None, :])  # in place: -D^-1/2 W D^-1/2
    laplacian.diagonal(dim1=1, dim2=2).add_(torch.where(active, 1.0, _EXCLUDED).to(dtype))
    vectors = torch.linalg.eigh(laplacian)[1]
    del laplacian, graph
    x = vectors[:, :, 1] * inv_sqrt  # generalised eigenvector; 0 at excluded nodes
    del vectors
    count = active.sum(1)
    mean = (x * weight).sum(1) / count.clamp(min=1)
    above = (x > mean[:, None]) & active
    fg_above = above.gather(1, (x.abs() * weight).argmax(1, keepdim=True))[:, 0]
    fg = torch.where(fg_above[:, None], above, active & ~above)
    if corner_rule is not None:
        swap = fg.gather(1, corners).sum(1) >= corner_rule
        fg = torch.where(swap[:, None], active & ~fg, fg)
        fg_above = fg_above ^ swap
    bg = active & ~fg
    fg_weight, bg_weight = fg.to(dtype), bg.to(dtype)
    cut = ((fg_weight[:, None] @ affinity)[:, 0] * bg_weight).sum(1)
    ncut = cut / (degree * fg_weight).sum(1).clamp(min=tiny) + cut / (degree * bg_weight).sum(1).clamp(min=tiny)
    score = (1 - ncut).clamp(0, 1)
    ok = (count >= 2) & fg.any(1) & bg.any(1) & (score > _MIN_GAIN)
    # soft map: foreground side (x - mean) * sign >= 0 scaled to [0.5, 1], background side to [0, 0.5)
    centred = (x - mean[:, None]) * torch.where(fg_above, 1.0, -1.0).to(dtype)[:, None]
    top = (centred * fg_weight).amax(1, keepdim=True).clamp(min=tiny)
    bottom = (-centred * bg_weight).amax(1, keepdim=True).clamp(min=tiny)
    background = (0.5 + 0.5 * centred / bottom).clamp(max=0.5 - 1e-6)  # a cell at the mean may lie on either side
    soft = torch.where(fg, 0.5 + 0.5 * centred / top, torch.where(bg, background, 0))
    fg &= ok[:, None]
    soft = soft.clamp(0, 1) * ok[:, None]
    return fg, soft, score * ok, ok


def maskcut_bipartitions(feats: Tensor,
                         sizes: Optional[Sequence[Tuple[int, int]]] = None,
                         num_objects: int = 3,
                         tau: float = 0.15,
                         eps: float = 1e-5,
                         corner_rule: Optional[int] = 3,
                         dtype: torch.dtype = torch.float64) -> MaskCutResult:
    """MaskCut of a batch of feature maps at feature resolution (see the module doc).

    An image stops at its first iteration without a cut (see :func:`ncut_step`); its later iterations find
    nothing.

    Args:
        feats (Tensor): (B, E, H, W) feature maps.
        sizes (Sequence[tuple], optional): (rows, cols) of each image's valid cells, the top-left part of the
            map; the rest (batch padding) is left out of the graph. None = the whole map.
        num_objects (int): N, the number of cuts.
        tau (float): cosine threshold of the affinity.
        eps (float): affinity below ``tau``.
        corner_rule (int, optional): see :func:`ncut_step`; corners are those of each image's valid part (on a
            map one cell high or wide two of them are the same cell, counted twice).
        dtype (torch.dtype): of the graph and the eigen-solve.

    Returns:
        MaskCutResult: (B, N, H, W) masks and soft maps, (B, N) scores and found flags.
    """
    batch, _, height, width = feats.shape
    device = feats.device
    if sizes is None:
        sizes = [(height, width)] * batch
    active = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for b, (rows, cols) in enumerate(sizes):
        active[b, :rows, :cols] = True
    active = active.flatten(1)
    corners = torch.tensor([[0, cols - 1, (rows - 1) * width, (rows - 1) * width + cols - 1] for rows, cols in sizes],
                           dtype=torch.long, device=device).view(batch, 4)
    affinity = patch_affinity(feats.flatten(2), tau, eps, dtype)
    masks = torch.zeros(batch, num_objects, height * width, dtype=torch.bool, device=device)
    soft = torch.zeros(batch, num_objects, height * width, dtype=dtype, device=device)
    scores = torch.zeros(batch, num_objects, dtype=dtype, device=device)
    found = torch.zeros(batch, num_objects, dtype=torch.bool, device=device)
    for k in range(num_objects):
        if not bool(active.sum(1).ge(2).any()):  # one host sync per iteration
            break
        masks[:, k], soft[:, k], scores[:, k], found[:, k] = ncut_step(affinity, active, corners, corner_rule)
        active &= ~masks[:, k] & found[:, k, None]  # taken cells leave the graph; no cut: the image stops
    shape = (batch, num_objects, height, width)
    return MaskCutResult(masks.view(shape), soft.view(shape), scores, found)


@MODELS.register_module()
class MaskCutGenerator(BaseModel):
    """MaskCut (CutLER): up to ``num_objects`` class-agnostic masks per image from a frozen backbone.

    A drop-in alternative to :class:`~freesolo_mmdet.free_mask.FreeMaskGenerator`: the same inputs, the same
    output format, the same tools. Masks come in cut order (first cut first), not sorted by score.

    Args:
        backbone (dict, optional): backbone config; None for features-only use (:meth:`masks_from_features`).
        data_preprocessor (dict, optional): e.g. ``DetDataPreprocessor`` with the ImageNet mean/std.
        feature_level (int): index into the backbone's outputs; -1 = the last.
        tau (float): cosine threshold of the affinity (CutLER: 0.15 on DINO ViT keys; a backbone whose features
            are all non-negative, e.g. a ResNet after ReLU, has larger cosines everywhere and needs a larger one).
        num_objects (int): N, the number of cuts per image (CutLER: 3).
        eps (float): affinity of a pair below ``tau``.
        corner_rule (int, optional): a foreground side that holds >= this many of the 4 corner cells of the
            image's feature map is swapped for the other side (3: an object may touch two corners, e.g. one that
            fills the bottom of the image, but a side with three corners is taken for background). None = off.
        refine (str): 'bilinear' or 'none'. 'none': the output mask is the cut's cells, each a block of pixels
            (nearest upsampling). 'bilinear': the soft map (:class:`MaskCutResult`) is resized bilinearly to the
            image and thresholded at ``mask_thr``: at 0.5 it keeps the cut at the cell centres and draws the
            boundary between cells where the eigenvector crosses its split value. A dependency-free stand-in for
            CutLER's CRF (mmcv has none); it does not snap to image edges.
        min_refine_iou (float, optional): with ``refine='bilinear'``, drop a mask whose refined and raw (block)
            versions have IoU below this (CutLER: 0.5 between CRF and raw mask); it drops fragmented cuts whose
            shape the refinement changes much. None = keep all.
        mask_thr (float): threshold of the resized soft map ('bilinear' only).
        min_score (float, optional): keep a mask only if its score ``1 - Ncut`` (see :func:`ncut_step`) is >=
            this. None = off (a cut that scores 0, no better than chance, is never made).
        emb_dim (int, optional): length of the semantic embedding: the mean of the L2-normalised features of the
            mask's cells, L2-normalised, resized along channels to ``emb_dim`` with ``F.interpolate(mode=emb_mode)``
            as FreeMaskGenerator resizes its query vectors (not re-normalised). None = keep all E channels.
        emb_mode (str): interpolation mode for the embedding ('linear', 'area', 'nearest').
        eigh_dtype (str): 'float64' (default: near-degenerate eigenvalues are common) or 'float32'.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 backbone: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 feature_level: int = -1,
                 tau: float = 0.15,
                 num_objects: int = 3,
                 eps: float = 1e-5,
                 corner_rule: Optional[int] = 3,
                 refine: str = 'bilinear',
                 min_refine_iou: Optional[float] = 0.5,
                 mask_thr: float = 0.5,
                 min_score: Optional[float] = None,
                 emb_dim: Optional[int] = 128,
                 emb_mode: str = 'linear',
                 eigh_dtype: str = 'float64',
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if refine not in ('bilinear', 'none'):
            raise ValueError(f"refine must be 'bilinear' or 'none', got {refine!r}")
        if eigh_dtype not in _DTYPES:
            raise ValueError(f'eigh_dtype must be one of {sorted(_DTYPES)}, got {eigh_dtype!r}')
        if num_objects < 1 or not eps > 0:
            raise ValueError(f'num_objects must be >= 1 and eps > 0, got {num_objects} and {eps}')
        if corner_rule is not None and not 1 <= corner_rule <= 4:
            raise ValueError(f'corner_rule must be None or 1..4 corners, got {corner_rule}')
        self.backbone = MODELS.build(backbone) if backbone is not None else None
        self.feature_level = feature_level
        self.tau = tau
        self.num_objects = num_objects
        self.eps = eps
        self.corner_rule = corner_rule
        self.refine = refine
        self.min_refine_iou = min_refine_iou
        self.mask_thr = mask_thr
        self.min_score = min_score
        self.emb_dim = emb_dim
        self.emb_mode = emb_mode
        self.eigh_dtype = eigh_dtype

    def forward(self, inputs: Tensor, data_samples: Optional[SampleList] = None,
                mode: str = 'predict') -> List[InstanceData]:
        """Only ``mode='predict'``: MaskCut has nothing to train."""
        if mode != 'predict':
            raise ValueError(f"MaskCutGenerator only supports mode='predict', got {mode!r}")
        return self.predict(inputs, data_samples)

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: Optional[SampleList] = None) -> List[InstanceData]:
        """MaskCut masks of a (padded) batch; one batched eigen-solve per cut for all images.

        Args:
            inputs (Tensor): (B, 3, H_in, W_in), normalised by the data preprocessor.
            data_samples (list, optional): metainfo with ``img_shape`` (resized, unpadded) and ``ori_shape``;
                None means unpadded inputs at original size.

        Returns:
            list[InstanceData]: per image ``masks`` (n, h, w) bool at ``ori_shape``, ``scores`` (n, ),
            ``embs`` (n, D), ``labels`` (n, ) zeros; n <= num_objects.
        """
        if self.backbone is None:
            raise RuntimeError('MaskCutGenerator was built without a backbone; '
                               'use masks_from_features on feature maps instead.')
        feats = self.backbone(inputs)[self.feature_level]
        sizes, fractions, ori_shapes = [], [], []
        for i in range(len(feats)):
            meta = data_samples[i].metainfo if data_samples is not None else {}
            img_shape = tuple(meta.get('img_shape', inputs.shape[-2:]))[:2]
            ori_shapes.append(tuple(meta.get('ori_shape', img_shape))[:2])
            cells, fraction = valid_feature_region(img_shape, inputs.shape[-2:], feats.shape[-2:])
            sizes.append(cells)
            fractions.append(fraction)
        cuts = self.bipartitions(feats, sizes)
        return [self.instances(feat[:, :rows, :cols], MaskCutResult(*(t[i] for t in cuts)), ori_shape, fraction)
                for i, (feat, (rows, cols), ori_shape, fraction) in enumerate(zip(feats, sizes, ori_shapes, fractions))]

    def masks_from_features(self, feat: Tensor, ori_shape: Tuple[int, int],
                            image_fraction: Tuple[float, float] = (1.0, 1.0)) -> InstanceData:
        """MaskCut masks of one feature map.

        Args:
            feat (Tensor): (E, H, W) features of one image.
            ori_shape (tuple): (h, w) of the output masks.
            image_fraction (tuple): share of the feature map's extent (rows, cols) covered by the image; the part
                past it is cropped after upsampling.

        Returns:
            InstanceData: ``masks`` (n, h, w) bool, ``scores`` (n, ) ``1 - Ncut``, ``embs`` (n, D),
            ``labels`` (n, ) zeros; n <= num_objects, in cut order.
        """
        cuts = self.bipartitions(feat[None])
        return self.instances(feat, MaskCutResult(*(t[0] for t in cuts)), ori_shape, image_fraction)

    def bipartitions(self, feats: Tensor, sizes: Optional[Sequence[Tuple[int, int]]] = None) -> MaskCutResult:
        """:func:`maskcut_bipartitions` with this generator's settings; (B, E, H, W) -> (B, N, ...)."""
        return maskcut_bipartitions(feats, sizes, self.num_objects, self.tau, self.eps, self.corner_rule,
                                    _DTYPES[self.eigh_dtype])

    def instances(self, feat: Tensor, cuts: MaskCutResult, ori_shape: Tuple[int, int],
                  image_fraction: Tuple[float, float] = (1.0, 1.0)) -> InstanceData:
        """Full-resolution masks, scores and embeddings of one image's cuts.

        Args:
            feat (Tensor): (E, H, W) the image's valid feature cells.
            cuts (MaskCutResult): one image's: masks and soft (N, H', W') with H' >= H, W' >= W (cropped here),
                scores and found (N, ).
            ori_shape (tuple): (h, w) of the output masks.
            image_fraction (tuple): as in :meth:`masks_from_features`.

        Returns:
            InstanceData: as :meth:`masks_from_features`.
        """
        height, width = ori_shape
        rows, cols = feat.shape[-2:]
        size = (math.ceil(height / image_fraction[0] - 1e-6), math.ceil(width / image_fraction[1] - 1e-6))
        cells, soft = cuts.masks[:, :rows, :cols], cuts.soft[:, :rows, :cols]
        keep = cuts.found.clone()
        if self.min_score is not None:
            keep &= cuts.scores >= self.min_score
        candidates = keep.nonzero()[:, 0].tolist()
        masks = torch.zeros((len(candidates), height, width), dtype=torch.bool, device=feat.device)
        for slot, k in enumerate(candidates):
            raw = F.interpolate(cells[k][None, None].float(), size=size, mode='nearest-exact')[0, 0, :height, :width]
            masks[slot] = raw > 0.5
            if self.refine == 'bilinear':
                full = F.interpolate(soft[k][None, None].float(), size=size, mode='bilinear', align_corners=False)
                refined = full[0, 0, :height, :width] >= self.mask_thr
                del full
                if self.min_refine_iou is not None:
                    union = (refined | masks[slot]).sum()
                    iou = (refined & masks[slot]).sum() / union.clamp(min=1)
                    keep[k] = bool(iou >= self.min_refine_iou)
                masks[slot] = refined
            keep[k] &= bool(masks[slot].any())
        kept = keep[candidates] if candidates else keep[:0]
        return InstanceData(masks=masks[kept], scores=cuts.scores[keep].float(),
                            labels=torch.zeros(int(keep.sum()), dtype=torch.long, device=feat.device),
                            embs=self.embed(feat, cells[keep]))

    def embed(self, feat: Tensor, cells: Tensor) -> Tensor:
        """Semantic embeddings of masks (see the class doc).

        Args:
            feat (Tensor): (E, H, W) features.
            cells (Tensor): (n, H, W) bool masks of cells, each non-empty.

        Returns:
            Tensor: (n, emb_dim), or (n, E) when ``emb_dim`` is None.
        """
        unit = F.normalize(feat.flatten(1), dim=0)
        weights = cells.flatten(1).to(unit.dtype)
        return resize_embedding(F.normalize(weights @ unit.t(), dim=1), self.emb_dim, self.emb_mode)
