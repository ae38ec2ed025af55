# Copyright (c) freesolo_mmdet contributors.
"""FreeSOLO head: SOLOv2 trained on coarse masks, plus an embedding branch.

Differences from :class:`mmdet.models.dense_heads.SOLOV2Head` (spec
section 2):

* the dice mask loss is replaced by max-projection + average-projection +
  pairwise affinity losses on the positive cells' mask logits, computed per
  FPN level and averaged over the levels that have positive cells;
* an extra 3x3 conv on the category tower predicts an ``emb_channels``-d
  embedding per cell, trained with ``1 - cos(pred, emb of the assigned
  coarse mask)`` on positive cells whose mask has a non-zero ``emb``;
* predictions carry tight ``bboxes`` derived from the masks and the ``embs`` of
  the kept cells (L2-normalised);
* optional DropLoss (CutLER, spec section 7; off by default): no category
  loss on negative cells whose predicted mask overlaps no pseudo label;
* optional flip-averaged inference (not in the spec; the pipeline's
  ``mask_flip_average``): :meth:`predict_flip_averaged` averages each grid
  cell's probabilities with its mirrored cell's in the flipped image.
"""
import warnings
from contextlib import nullcontext
from typing import List, Optional, Tuple

import mmcv
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import SOLOV2Head
from mmdet.models.layers import mask_matrix_nms
from mmdet.models.utils import generate_coordinate, multi_apply
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import (ConfigType, InstanceList, OptConfigType,
                         OptInstanceList)

from freesolo_mmdet.utils.mask_ops import tight_boxes

__all__ = ['FreeSOLOHead']


class _TensorMasks:
    """(n, H, W) bool mask tensor with the ``BitmapMasks`` methods that mmdet's mask heads call on ground
    truth (``pad``, ``to_tensor``, indexing, ``cat``): :class:`TwoViewAugment` leaves the training masks as
    tensors on the device, and they stay there."""

    def __init__(self, masks: Tensor) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index) -> '_TensorMasks':
        masks = self.masks[index]
        return _TensorMasks(masks if masks.dim() == 3 else masks[None])

    @staticmethod
    def cat(masks: List['_TensorMasks']) -> '_TensorMasks':
        return _TensorMasks(torch.cat([m.masks for m in masks]))

    def pad(self, out_shape: Tuple[int, int], pad_val: int = 0) -> '_TensorMasks':
        """Zero-pad at the bottom and right to ``out_shape`` (as ``BitmapMasks.pad``)."""
        height, width = self.masks.shape[-2:]
        return _TensorMasks(F.pad(self.masks, (0, out_shape[1] - width, 0, out_shape[0] - height), value=pad_val))

    def to_tensor(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        return self.masks.to(device=device, dtype=dtype)


@MODELS.register_module()
class FreeSOLOHead(SOLOV2Head):
    """Class-agnostic SOLOv2 head of FreeSOLO.

    Args:
        num_classes (int): Foreground classes. Defaults to 1.
        loss_mask_maxproj (dict): Max-projection dice loss config (a loss
            with ``instance_losses``, as ``MaxProjLoss``: the head pools each
            image's per-instance losses per level).
        loss_mask_avgproj (dict): Average-projection dice loss config (the
            same).
        loss_mask_pairwise (dict, optional): Pairwise affinity loss config
            (a loss with ``instance_sums`` and ``reduce``, as
            ``PairwiseAffinityLoss``); ``None`` disables it. Its ``box_mode`` (default
            ``'projection'``: the outer product of the coarse mask's
            max-projections, spec section 2; ``'filled'``: the filled
            bounding box) selects the pixels that carry weight, see
            :class:`PairwiseAffinityLoss`. When enabled every training data
            sample must carry ``color_similarity`` (8, Hp/4, Wp/4), as set by
            ``FreeSOLODataPreprocessor``; a missing one raises an error.
        loss_emb_weight (float): Weight beta of the embedding loss.
        emb_channels (int): Embedding dimension D. Defaults to 128.
        with_emb (bool): Whether to build and train the embedding branch.
        loss_mask (dict, optional): SOLOv2's dice loss; not used by FreeSOLO,
            accepted (with a warning) so that SOLOv2 base configs still build.
        drop_loss_thr (float, optional): DropLoss (CutLER, Wang et al.,
            CVPR 2023; spec section 7). ``None`` (default) disables it: the
            category loss is FreeSOLO's / SOLOv2's. Otherwise a float in
            [0, 1] (CutLER uses 0.01): a *negative* cell (not assigned to
            any pseudo label) whose predicted mask has a best IoU below it
            with every pseudo label of its image gets weight 0 in the
            category (focal) loss, so that the head is not taught that
            objects the pseudo masks missed are background. Positive cells
            keep all their losses and ``avg_factor`` stays SOLOv2's
            ``num_pos + 1``. Details:

            * predicted mask of a cell: its dynamic kernel applied to the
              mask features, ``sigmoid > test_cfg.mask_thr`` (0.5 when the
              head has no ``test_cfg``), i.e. the region inference would
              output, at the mask-feature resolution (H/4, W/4), not
              downsampled further;
            * pseudo labels: the gt masks downsampled to that resolution
              exactly as SOLOv2's mask targets (``mmcv.imrescale`` by
              ``1 / mask_stride``, pasted top-left);
            * IoU of the binary masks (intersection / union of pixel
              counts); an empty predicted mask, and every cell of an image
              without pseudo labels, has IoU 0 and is dropped (inference
              discards empty masks anyway);
            * computed without gradient and outside autocast (float32
              pixel counts), ``drop_loss_chunk`` cells at a time: memory is
              ``drop_loss_chunk * H/4 * W/4`` floats, compute about one
              dynamic conv over all negative cells per image (for grids
              40, 36, 24, 16, 12: 3,872 cells).

            The loss dict then also carries ``drop_frac``: the fraction of
            the batch's negative cells that were dropped. Its key has no
            ``'loss'`` in it, so mmengine logs it and does not add it to the
            total loss.
        **kwargs: Arguments of :class:`SOLOV2Head` (``mask_feature_head``,
            ``num_grids``, ...).
    """

    # DropLoss computes this many cells' masks at a time.
    drop_loss_chunk: int = 512

    def __init__(self,
                 *args,
                 num_classes: int = 1,
                 loss_mask_maxproj: ConfigType = dict(
                     type='MaxProjLoss', loss_weight=1.0),
                 loss_mask_avgproj: ConfigType = dict(
                     type='AvgProjLoss', loss_weight=0.1),
                 loss_mask_pairwise: OptConfigType = dict(
                     type='PairwiseAffinityLoss',
                     loss_weight=1.0,
                     color_threshold=0.3,
                     kernel_size=3,
                     dilation=2,
                     warmup_iters=1000,
                     box_mode='projection'),
                 loss_emb_weight: float = 1.0,
                 emb_channels: int = 128,
                 with_emb: bool = True,
                 loss_mask: OptConfigType = None,
                 drop_loss_thr: Optional[float] = None,
                 **kwargs) -> None:
        if drop_loss_thr is not None and not 0 <= drop_loss_thr <= 1:
            raise ValueError(
                f'drop_loss_thr must be None or in [0, 1], got '
                f'{drop_loss_thr}.')
        self.drop_loss_thr = drop_loss_thr
        if loss_mask is not None:
            warnings.warn('FreeSOLOHead ignores `loss_mask` (SOLOv2 dice): '
                          'masks are trained with the projection and '
                          'pairwise losses.')
        self.with_emb = with_emb
        self.emb_channels = emb_channels
        super().__init__(*args, num_classes=num_classes, **kwargs)
        del self.loss_mask  # SOLOHead always builds the default dice loss
        self.loss_mask_maxproj = MODELS.build(loss_mask_maxproj)
        self.loss_mask_avgproj = MODELS.build(loss_mask_avgproj)
        self.loss_mask_pairwise = (MODELS.build(loss_mask_pairwise)
                                   if loss_mask_pairwise is not None else None)
        self.loss_emb_weight = loss_emb_weight

    def _init_layers(self) -> None:
        """Add the embedding conv on top of the category tower."""
        super()._init_layers()
        if self.with_emb:
            self.conv_emb = nn.Conv2d(
                self.feat_channels, self.emb_channels, 3, padding=1)

    def forward(self, x: Tuple[Tensor]) -> tuple:
        """Forward features of the FPN.

        Returns:
            tuple: ``mlvl_kernel_preds`` (list of (B, kernel_out_channels,
            G, G)), ``mlvl_cls_preds`` (list of (B, num_classes, G, G)),
            ``mask_feats`` (B, mask_out_channels, H/4, W/4) and
            ``mlvl_emb_preds`` (list of (B, D, G, G), or None without the
            embedding branch).
        """
        mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_cate_feats = \
            self._forward_towers(x)
        mlvl_emb_preds = ([self.conv_emb(feat) for feat in mlvl_cate_feats]
                          if self.with_emb else None)
        return mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_emb_preds

    def _forward_towers(self, x: Tuple[Tensor]) -> tuple:
        """SOLOv2's forward, also returning the category tower's output per
        level, (B, feat_channels, G, G): the embedding conv's input."""
        assert len(x) == self.num_levels
        mask_feats = self.mask_feature_head(x)
        mlvl_kernel_preds, mlvl_cls_preds, mlvl_cate_feats = [], [], []
        for feat, num_grid in zip(self.resize_feats(x), self.num_grids):
            coord_feat = generate_coordinate(feat.size(), feat.device)
            kernel_feat = F.interpolate(
                torch.cat([feat, coord_feat], 1),
                size=num_grid,
                mode='bilinear',
                align_corners=False)
            cate_feat = kernel_feat[:, :-2].contiguous()
            kernel_feat = kernel_feat.contiguous()
            for kernel_conv in self.kernel_convs:
                kernel_feat = kernel_conv(kernel_feat)
            for cls_conv in self.cls_convs:
                cate_feat = cls_conv(cate_feat)
            mlvl_kernel_preds.append(self.conv_kernel(kernel_feat))
            mlvl_cls_preds.append(self.conv_cls(cate_feat))
            mlvl_cate_feats.append(cate_feat)
        return mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_cate_feats

    def predict(self,
                x: Tuple[Tensor],
                batch_data_samples: SampleList,
                rescale: bool = False,
                **kwargs) -> InstanceList:
        """:meth:`BaseMaskHead.predict`, with the embedding conv evaluated
        only at the cells kept by the matrix NMS (at most ``max_per_img`` per
        image) instead of over every grid cell: the same embeddings, without
        the conv over all cells (~3% of the towers' FLOPs)."""
        batch_img_metas = [sample.metainfo for sample in batch_data_samples]
        mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_cate_feats = \
            self._forward_towers(x)
        return self.predict_by_feat(
            mlvl_kernel_preds,
            mlvl_cls_preds,
            mask_feats,
            None,
            batch_img_metas=batch_img_metas,
            rescale=rescale,
            mlvl_cate_feats=mlvl_cate_feats if self.with_emb else None)

    def _emb_at_points(self, cate_feats: List[Tensor],
                       point_inds: Tensor) -> Tensor:
        """``conv_emb`` of one image at some cells.

        Args:
            cate_feats (list[Tensor]): Per level (feat_channels, G, G).
            point_inds (Tensor): (n, ) indexes of cells over all levels (the
                order of :meth:`predict_by_feat`'s ``flatten``).

        Returns:
            Tensor: (n, D), equal to ``conv_emb`` over the whole grids taken
            at those cells.
        """
        weight = self.conv_emb.weight  # (D, C, 3, 3), padding 1
        size = weight.shape[-1]
        out = weight.new_empty(len(point_inds), weight.shape[0])
        offsets = torch.arange(size, device=point_inds.device)
        start = 0
        for feat, num_grid in zip(cate_feats, self.num_grids):
            end = start + num_grid**2
            sel = (point_inds >= start) & (point_inds < end)
            local = point_inds[sel] - start
            rows = (local // num_grid)[:, None, None] + offsets[:, None]
            cols = (local % num_grid)[:, None, None] + offsets
            padded = F.pad(feat, (size // 2, ) * 4)
            patches = padded[:, rows, cols].transpose(0, 1).flatten(1)
            out[sel] = torch.addmm(self.conv_emb.bias, patches,
                                   weight.flatten(1).t())
            start = end
        return out

    def loss(self,
             x: Tuple[Tensor],
             batch_data_samples: SampleList,
             positive_infos: OptInstanceList = None,
             **kwargs) -> dict:
        """Collect each sample's ``color_similarity`` (8, Hp/4, Wp/4) for the
        pairwise loss, then compute the losses as
        :meth:`BaseMaskHead.loss` does."""
        color_sims = None
        if self.loss_mask_pairwise is not None:
            missing = [
                i for i, sample in enumerate(batch_data_samples)
                if 'color_similarity' not in sample
            ]
            if missing:
                raise ValueError(
                    f'data samples {missing} carry no `color_similarity`, '
                    'which the pairwise loss needs: use the '
                    'FreeSOLODataPreprocessor, or set '
                    '`loss_mask_pairwise=None` in the head config.')
            color_sims = torch.stack(
                [sample.color_similarity for sample in batch_data_samples])
        for sample in batch_data_samples:
            if isinstance(sample.gt_instances.get('masks'), Tensor):
                sample.gt_instances.masks = _TensorMasks(sample.gt_instances.masks)
        return super().loss(
            x,
            batch_data_samples,
            positive_infos=positive_infos,
            batch_color_similarity=color_sims,
            **kwargs)

    def _get_targets_single(self,
                            gt_instances: InstanceData,
                            featmap_sizes: Optional[list] = None) -> tuple:
        """SOLOv2 targets of one image, plus the gt index of each positive.

        SOLOv2's assignment is run one gt instance at a time and merged in
        gt order, which reproduces exactly its joint result (later instances
        overwrite the labels of shared cells; mask targets and positive
        indexes are listed in gt order).

        Returns:
            tuple: SOLOv2's ``mlvl_pos_mask_targets``, ``mlvl_labels``,
            ``mlvl_pos_masks``, ``mlvl_pos_indexes`` and
            ``mlvl_pos_gt_inds``: per level a (num_pos, ) long tensor, the
            index in ``gt_instances`` of each positive.
        """
        parent = super()._get_targets_single
        if len(gt_instances) == 0:
            targets = parent(gt_instances, featmap_sizes)
            empty = gt_instances.labels.new_zeros(0)
            return (*targets, [empty] * self.num_levels)
        per_gt = [
            parent(gt_instances[i], featmap_sizes)
            for i in range(len(gt_instances))
        ]
        mask_targets, labels, pos_masks, pos_indexes, pos_gt_inds = \
            [], [], [], [], []
        for lvl in range(self.num_levels):
            lvl_labels = per_gt[0][1][lvl].clone()
            for gt_targets in per_gt[1:]:
                fg = gt_targets[1][lvl] != self.num_classes
                lvl_labels[fg] = gt_targets[1][lvl][fg]
            mask_targets.append(torch.cat([t[0][lvl] for t in per_gt]))
            labels.append(lvl_labels)
            pos_masks.append(
                torch.stack([t[2][lvl] for t in per_gt]).any(dim=0))
            pos_indexes.append([i for t in per_gt for i in t[3][lvl]])
            pos_gt_inds.append(
                gt_instances.labels.new_tensor(
                    [gt for gt, t in enumerate(per_gt) for _ in t[3][lvl]],
                    dtype=torch.long))
        return mask_targets, labels, pos_masks, pos_indexes, pos_gt_inds

    def loss_by_feat(self,
                     mlvl_kernel_preds: List[Tensor],
                     mlvl_cls_preds: List[Tensor],
                     mask_feats: Tensor,
                     mlvl_emb_preds: Optional[List[Tensor]],
                     batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_color_similarity: Optional[Tensor] = None,
                     **kwargs) -> dict:
        """Compute the FreeSOLO losses.

        Args:
            mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_emb_preds:
                outputs of :meth:`forward`.
            batch_gt_instances (list[:obj:`InstanceData`]): ``masks`` padded
                to the batch shape, ``bboxes``, ``labels`` and optionally
                ``embs`` (n, D); all-zero rows mean "no embedding".
            batch_img_metas (list[dict]): Meta information of the images.
            batch_color_similarity (Tensor, optional): (B, 8, H/4, W/4),
                required when the pairwise loss is enabled.

        Returns:
            dict[str, Tensor]: ``loss_maxproj``, ``loss_avgproj``,
            ``loss_pairwise`` (if enabled), ``loss_cls``, ``loss_emb`` (if
            ``with_emb``), and the logged, not summed, ``drop_frac`` (with
            DropLoss).
        """
        featmap_sizes = mask_feats.size()[-2:]
        if (batch_color_similarity is not None
                and batch_color_similarity.shape[-2:] != featmap_sizes):
            raise ValueError(
                f'color_similarity is {tuple(batch_color_similarity.shape)} '
                f'but the mask features are {tuple(featmap_sizes)}: both '
                'must be at stride 4 of the padded batch (pad the batch to a '
                'multiple of 32).')
        mask_targets, labels, pos_masks, pos_indexes, pos_gt_inds = \
            multi_apply(self._get_targets_single, batch_gt_instances,
                        featmap_sizes=featmap_sizes)

        # the mask losses on each image's logits of all levels at once (no copy of the logits into per-level
        # batches, nor out of it in the backward pass), pooled per level: a level's loss is the mean over its
        # instances (projections) or its weighted mean over their pixel pairs (pairwise), as on a level's batch
        pos_logits = self._positive_mask_logits(mlvl_kernel_preds, mask_feats,
                                                pos_indexes)
        pairwise = self.loss_mask_pairwise
        inst_losses = {'loss_maxproj': [], 'loss_avgproj': [], 'levels': []}
        pair_sums = []
        emb_preds, emb_targets = [], []
        for img_id, gt_instances in enumerate(batch_gt_instances):
            counts = [len(inds) for inds in pos_indexes[img_id]]
            if sum(counts) == 0:
                continue
            logits = pos_logits[img_id]
            targets = torch.cat(mask_targets[img_id])
            inst_losses['loss_maxproj'].append(
                self.loss_mask_maxproj.instance_losses(logits, targets))
            inst_losses['loss_avgproj'].append(
                self.loss_mask_avgproj.instance_losses(logits, targets))
            inst_losses['levels'].append(
                torch.repeat_interleave(torch.arange(self.num_levels, device=logits.device),
                                        torch.tensor(counts, device=logits.device)))
            if pairwise is not None:
                pair_sums.append(pairwise.instance_sums(
                    logits, targets, batch_color_similarity,
                    img_inds=logits.new_full((len(logits), ), img_id, dtype=torch.long)))
            if self.with_emb:
                for lvl, inds in enumerate(pos_indexes[img_id]):
                    if inds:
                        emb_preds.append(mlvl_emb_preds[lvl][img_id].flatten(1)[:, inds].t())
                        emb_targets.append(self._gt_embs(gt_instances)[pos_gt_inds[img_id][lvl]])
        losses = {}
        if inst_losses['levels']:
            levels = torch.cat(inst_losses['levels'])
            present = levels.unique()  # the levels with positives
            for name in ('loss_maxproj', 'loss_avgproj'):
                per_inst = torch.cat(inst_losses[name])
                level_sums = per_inst.new_zeros(self.num_levels).index_add(0, levels, per_inst)
                level_means = level_sums[present] / torch.bincount(levels)[present].to(per_inst.dtype)
                losses[name] = level_means.mean()
            if pairwise is not None:
                loss_sums = torch.cat([sums[0] for sums in pair_sums])
                weight_sums = torch.cat([sums[1] for sums in pair_sums])
                losses['loss_pairwise'] = torch.stack([
                    pairwise.reduce(loss_sums[levels == lvl], weight_sums[levels == lvl]) for lvl in present.tolist()
                ]).mean()
        for name in ('loss_maxproj', 'loss_avgproj') + (('loss_pairwise', ) if pairwise is not None else ()):
            if name not in losses or not losses[name].requires_grad:  # graph-connected zero
                losses[name] = losses.get(name, 0) + mask_feats.sum() * 0

        num_pos = sum(int(m.sum()) for img in pos_masks for m in img)
        flatten_labels = torch.cat([
            torch.cat([img_lvl_labels.flatten() for img_lvl_labels in lvl])
            for lvl in zip(*labels)
        ])
        flatten_cls_preds = torch.cat([
            lvl_cls_preds.permute(0, 2, 3, 1).reshape(-1, self.num_classes)
            for lvl_cls_preds in mlvl_cls_preds
        ])
        cls_weights, drop_frac = None, None
        if self.drop_loss_thr is not None:
            cls_weights, drop_frac = self._drop_loss_weights(
                mlvl_kernel_preds, mask_feats, batch_gt_instances,
                mask_targets, pos_masks, pos_gt_inds)
            cls_weights = cls_weights.to(flatten_cls_preds.dtype)
        losses['loss_cls'] = self.loss_cls(
            flatten_cls_preds,
            flatten_labels,
            weight=cls_weights,
            avg_factor=num_pos + 1)
        if drop_frac is not None:
            losses['drop_frac'] = drop_frac
        if self.with_emb:
            losses['loss_emb'] = self._emb_loss(emb_preds, emb_targets,
                                                mlvl_emb_preds)
        return losses

    def _positive_mask_logits(
            self, mlvl_kernel_preds: List[Tensor], mask_feats: Tensor,
            pos_indexes: List[List[List[int]]]) -> List[Tensor]:
        """Mask logits of the positive cells: one dynamic convolution per
        image with the kernels of all its levels' positives.

        The mask features are unbound once, so that the backward pass stacks
        one gradient, instead of writing a full-size zero tensor for each
        (image, level) slice as a per-level convolution on
        ``mask_feats[img_id:img_id + 1]`` does.

        Args:
            mlvl_kernel_preds (list[Tensor]): per level (B, E*k*k, S, S)
                dynamic kernels (E mask feature channels, k the dynamic
                convolution size).
            mask_feats (Tensor): (B, E, H, W) mask features.
            pos_indexes (list[list[list[int]]]): per image and level, the
                flat indexes of the positive cells.

        Returns:
            list[Tensor]: per image, (num_pos, H, W) logits of its positives,
            level after level (each level's in ``pos_indexes`` order).
        """
        size = self.dynamic_conv_size
        img_feats = mask_feats.unbind(0)
        img_kernels = [lvl.flatten(2).unbind(0) for lvl in mlvl_kernel_preds]
        logits = []
        for img_id, feats in enumerate(img_feats):
            counts = [len(inds) for inds in pos_indexes[img_id]]
            if sum(counts) == 0:
                logits.append(feats.new_zeros((0, *feats.shape[-2:])))
                continue
            kernels = torch.cat([
                img_kernels[lvl][img_id][:, inds]
                for lvl, inds in enumerate(pos_indexes[img_id]) if inds
            ], dim=1)  # (E*k*k, num_pos)
            if size == 1:  # a matrix product: no im2col copy of the features (nor col2im in the backward pass)
                img_logits = (kernels.t() @ feats.flatten(1)).view(-1, *feats.shape[-2:])
            else:
                img_logits = F.conv2d(
                    feats[None],
                    kernels.t().reshape(-1, feats.shape[0], size, size))[0]
            logits.append(img_logits)
        return logits

    def _drop_loss_weights(self, mlvl_kernel_preds: List[Tensor],
                           mask_feats: Tensor,
                           batch_gt_instances: InstanceList,
                           mask_targets: List[List[Tensor]],
                           pos_masks: List[List[Tensor]],
                           pos_gt_inds: List[List[Tensor]]
                           ) -> Tuple[Tensor, Tensor]:
        """DropLoss: the category loss weight of every cell.

        Args:
            mlvl_kernel_preds (list[Tensor]): per level (B, C * k * k, G, G).
            mask_feats (Tensor): (B, C, h, w), h, w = H/4, W/4.
            batch_gt_instances (list[:obj:`InstanceData`]): pseudo labels.
            mask_targets, pos_masks, pos_gt_inds: per image and level, the
                (num_pos, h, w) mask targets, (G * G, ) positive flags and
                (num_pos, ) gt indexes of :meth:`_get_targets_single`.

        Returns:
            tuple[Tensor, Tensor]: ``weights`` (sum over levels of B * G * G,
            ) float, in the order of the flattened category labels (level,
            image, row-major cell): 0 where a negative cell's predicted mask
            has a best IoU below ``drop_loss_thr`` with the image's pseudo
            labels, else 1; and ``drop_frac`` (), the fraction of negative
            cells whose weight is 0 (no gradient).
        """
        featmap_sizes = mask_feats.shape[-2:]
        mask_thr = (self.test_cfg or {}).get('mask_thr', 0.5)
        device_type = mask_feats.device.type
        no_autocast = (
            torch.autocast(device_type=device_type, enabled=False)
            if device_type in ('cuda', 'cpu') else nullcontext())
        drops = []  # per image: per level (G * G, ) bool
        with torch.no_grad(), no_autocast:
            for img_id, gt_instances in enumerate(batch_gt_instances):
                pos = torch.cat(pos_masks[img_id])
                kernels = torch.cat([
                    lvl_kernels[img_id].flatten(1)
                    for lvl_kernels in mlvl_kernel_preds
                ], dim=1).t()  # (num_cells, C * k * k)
                gt_masks = self._pseudo_label_masks(
                    gt_instances, mask_targets[img_id], pos_gt_inds[img_id],
                    featmap_sizes, mask_feats.device)
                best_ious = self._best_mask_ious(
                    kernels[~pos], mask_feats[img_id], gt_masks, mask_thr)
                drop = torch.zeros_like(pos)
                drop[~pos] = best_ious < self.drop_loss_thr
                drops.append(drop.split([g**2 for g in self.num_grids]))
            weights = torch.cat([
                drops[img_id][lvl] for lvl in range(self.num_levels)
                for img_id in range(len(drops))
            ]).logical_not().float()
            num_neg = sum((~torch.cat(img)).sum() for img in pos_masks)
            drop_frac = (weights.numel() - weights.sum()) / num_neg.clamp(
                min=1)
        return weights, drop_frac

    def _pseudo_label_masks(self, gt_instances: InstanceData,
                            mask_targets: List[Tensor],
                            pos_gt_inds: List[Tensor],
                            featmap_sizes: Tuple[int, int],
                            device: torch.device) -> Tensor:
        """(n, h, w) bool: an image's pseudo labels at the mask-feature
        resolution, downsampled as SOLOv2's mask targets. Taken from the
        targets of the positive cells (per level (num_pos, h, w), with their
        (num_pos, ) gt indexes); a gt without positive cells (outside every
        scale range) is downsampled here the same way."""
        masks = torch.zeros((len(gt_instances), *featmap_sizes),
                            dtype=torch.bool, device=device)
        found = torch.zeros(len(gt_instances), dtype=torch.bool,
                            device=device)
        for targets, gt_inds in zip(mask_targets, pos_gt_inds):
            masks[gt_inds] = targets.bool()
            found[gt_inds] = True
        missing = found.logical_not().nonzero().flatten().tolist()
        if missing:
            full = gt_instances.masks[missing].to_tensor(
                dtype=torch.bool, device=device)
            for gt_ind, full_mask in zip(missing, full):
                small = mmcv.imrescale(
                    np.uint8(full_mask.cpu().numpy()),
                    scale=1. / self.mask_stride)
                small = torch.from_numpy(small).to(device=device).bool()
                small = small[:featmap_sizes[0], :featmap_sizes[1]]
                masks[gt_ind, :small.shape[0], :small.shape[1]] = small
        return masks

    def _best_mask_ious(self, kernels: Tensor, mask_feats: Tensor,
                        gt_masks: Tensor, mask_thr: float) -> Tensor:
        """Best IoU of each cell's predicted mask with the pseudo labels.

        Args:
            kernels (Tensor): (m, C * k * k) dynamic kernels of m cells.
            mask_feats (Tensor): (C, h, w) mask features of the image.
            gt_masks (Tensor): (n, h, w) bool pseudo labels.
            mask_thr (float): a pixel is in the predicted mask when its
                probability is above it.

        Returns:
            Tensor: (m, ) float32 in [0, 1]; 0 when n == 0.
        """
        best = mask_feats.new_zeros(len(kernels), dtype=torch.float)
        if len(kernels) == 0 or len(gt_masks) == 0:
            return best
        gts = gt_masks.flatten(1).float()  # (n, h * w)
        gt_areas = gts.sum(1)
        feats = mask_feats[None].float()
        for start in range(0, len(kernels), self.drop_loss_chunk):
            chunk = kernels[start:start + self.drop_loss_chunk].float()
            logits = F.conv2d(
                feats,
                chunk.reshape(len(chunk), -1, self.dynamic_conv_size,
                              self.dynamic_conv_size))[0]
            preds = (logits.sigmoid() > mask_thr).flatten(1).float()
            inters = preds @ gts.t()  # (chunk, n) pixel counts
            unions = preds.sum(1, keepdim=True) + gt_areas - inters
            best[start:start + len(chunk)] = (
                inters / unions.clamp(min=1)).max(1).values
        return best

    def _gt_embs(self, gt_instances: InstanceData) -> Tensor:
        """(n, D) embeddings of the gt instances; zeros when absent."""
        if 'embs' not in gt_instances:
            return gt_instances.labels.new_zeros(
                len(gt_instances), self.emb_channels, dtype=torch.float)
        embs = gt_instances.embs
        if embs.dim() != 2 or embs.shape[1] != self.emb_channels:
            raise ValueError(f'gt_instances.embs is {tuple(embs.shape)}, '
                             f'expected (n, {self.emb_channels}).')
        return embs.float()

    def _emb_loss(self, emb_preds: List[Tensor], emb_targets: List[Tensor],
                  mlvl_emb_preds: List[Tensor]) -> Tensor:
        """``beta * mean(1 - cos)`` over positive cells whose coarse mask has
        a (non-zero) embedding; a graph-connected zero when there is none."""
        zero = sum(preds.sum() for preds in mlvl_emb_preds) * 0
        if not emb_preds:
            return zero
        preds, targets = torch.cat(emb_preds), torch.cat(emb_targets)
        valid = targets.abs().sum(dim=1) > 0
        if not valid.any():
            return zero
        cos = F.cosine_similarity(preds[valid], targets[valid], dim=1)
        return (1 - cos).mean() * self.loss_emb_weight

    def predict_by_feat(self, mlvl_kernel_preds: List[Tensor],
                        mlvl_cls_scores: List[Tensor], mask_feats: Tensor,
                        mlvl_emb_preds: Optional[List[Tensor]],
                        batch_img_metas: List[dict],
                        mlvl_cate_feats: Optional[List[Tensor]] = None,
                        **kwargs) -> InstanceList:
        """SOLOv2's inference (point NMS, then per image
        :meth:`_predict_by_feat_single`), also carrying the embeddings: from
        ``mlvl_emb_preds`` (every cell's) or, if None, by ``conv_emb`` on
        ``mlvl_cate_feats`` at the kept cells only (see :meth:`predict`)."""
        mlvl_cls_scores = [
            self._point_nms(scores.sigmoid()) for scores in mlvl_cls_scores
        ]
        flatten = self._flatten_points
        return [
            self._predict_by_feat_single(
                flatten(mlvl_kernel_preds, img_id),
                flatten(mlvl_cls_scores, img_id),
                mask_feats[img_id:img_id + 1],
                img_meta=img_meta,
                emb_preds=flatten(mlvl_emb_preds, img_id)
                if mlvl_emb_preds is not None else None,
                cate_feats=[feat[img_id] for feat in mlvl_cate_feats]
                if mlvl_cate_feats is not None else None)
            for img_id, img_meta in enumerate(batch_img_metas)
        ]

    @staticmethod
    def _point_nms(scores: Tensor) -> Tensor:
        """SOLOv2's point NMS: ``scores`` (B, C, G, G) probabilities, 0
        where a cell is not the maximum of its 2x2 neighbourhood."""
        return scores * (F.max_pool2d(scores, 2, stride=1,
                                      padding=1)[..., :-1, :-1] == scores)

    @staticmethod
    def _flatten_points(mlvl: List[Tensor], img_id: int) -> Tensor:
        """(num_points, C) of one image over all levels' (B, C, G, G)."""
        return torch.cat([lvl[img_id].flatten(1).t() for lvl in mlvl])

    def mirrored_points(self, device: torch.device) -> Tensor:
        """(num_points, ) the cell each cell mirrors to left-right: cell
        (r, c) of a G x G grid to (r, G - 1 - c), in the flattened order of
        :meth:`predict_by_feat` (levels one after the other, rows first)."""
        perms, start = [], 0
        for num_grid in self.num_grids:
            cells = torch.arange(num_grid**2, device=device)
            perms.append(start + cells.view(num_grid, num_grid).flip(1)
                         .flatten())
            start += num_grid**2
        return torch.cat(perms)

    def predict_flip_averaged(self, x: Tuple[Tensor],
                              batch_data_samples: SampleList,
                              **kwargs) -> InstanceList:
        """Inference averaged over the image and its mirror image (not in
        the spec: test-time flip averaging, an option of the pipeline).

        ``x`` holds the FPN features of 2B inputs: the batch's B padded
        inputs, then the same B tensors flipped left-right (padding
        included, ``inputs.flip(-1)``), so that grid cell (r, c) of the
        flipped view sees what cell (r, G - 1 - c) of the image sees, and its
        mask features are the image's mirrored. Per cell, the two views'
        category probabilities (before point NMS) and mask probabilities (the
        mirrored cell's mask, flipped back) are averaged; then SOLOv2's
        inference runs on the averages (point NMS, score and mask thresholds,
        maskness, matrix NMS). Embeddings are the normalised mean of the two
        views' normalised embeddings.

        Args:
            x (tuple[Tensor]): Per level (2B, C, H_l, W_l).
            batch_data_samples (list[DetDataSample]): The B images' samples.

        Returns:
            list[InstanceData]: As :meth:`predict`, for the B images.
        """
        batch_img_metas = [sample.metainfo for sample in batch_data_samples]
        num_imgs = len(batch_img_metas)
        assert x[0].shape[0] == 2 * num_imgs, \
            'predict_flip_averaged: x must hold the images, then their flips'
        mlvl_kernel_preds, mlvl_cls_preds, mask_feats, mlvl_cate_feats = \
            self._forward_towers(x)
        mlvl_cls_scores = [
            self._point_nms((preds[:num_imgs].sigmoid() +
                             preds[num_imgs:].sigmoid().flip(-1)) / 2)
            for preds in mlvl_cls_preds
        ]
        mirror = self.mirrored_points(mask_feats.device)
        flatten = self._flatten_points
        return [
            self._predict_by_feat_single(
                flatten(mlvl_kernel_preds, img_id),
                flatten(mlvl_cls_scores, img_id),
                mask_feats[img_id:img_id + 1],
                img_meta=img_meta,
                cate_feats=[feat[img_id] for feat in mlvl_cate_feats]
                if self.with_emb else None,
                flipped=dict(
                    kernel_preds=flatten(mlvl_kernel_preds,
                                         num_imgs + img_id),
                    mask_feats=mask_feats[num_imgs + img_id:num_imgs +
                                          img_id + 1],
                    cate_feats=[feat[num_imgs + img_id]
                                for feat in mlvl_cate_feats]
                    if self.with_emb else None,
                    mirror=mirror))
            for img_id, img_meta in enumerate(batch_img_metas)
        ]

    @staticmethod
    def upsample_masks(mask_probs: Tensor, upsampled_size: Tuple[int, int],
                       img_shape: Tuple[int, int],
                       ori_shape: Tuple[int, int],
                       mask_thr: float) -> Tensor:
        """SOLOv2's two bilinear resizes and threshold, one mask at a time.

        Args:
            mask_probs (Tensor): (n, H/4, W/4) mask probabilities.
            upsampled_size (tuple): (H, W) of the padded input.
            img_shape (tuple): (h, w) of the resized image inside it.
            ori_shape (tuple): (h0, w0) of the original image.
            mask_thr (float): threshold of the probabilities at ``ori_shape``.

        Returns:
            Tensor: (n, h0, w0) bool, equal to SOLOv2's batched resize. Peak memory is the n bool
            masks plus one float mask at ``ori_shape``, not n float masks (19 GB for 100 masks of a
            48-megapixel image).
        """
        masks = mask_probs.new_empty((len(mask_probs), *ori_shape),
                                     dtype=torch.bool)
        for i, probs in enumerate(mask_probs):
            probs = F.interpolate(
                probs[None, None],
                size=upsampled_size,
                mode='bilinear',
                align_corners=False)[..., :img_shape[0], :img_shape[1]]
            masks[i] = F.interpolate(
                probs, size=ori_shape, mode='bilinear',
                align_corners=False)[0, 0] > mask_thr
        return masks

    def _predict_by_feat_single(self,
                                kernel_preds: Tensor,
                                cls_scores: Tensor,
                                mask_feats: Tensor,
                                img_meta: dict,
                                emb_preds: Optional[Tensor] = None,
                                cfg: OptConfigType = None,
                                cate_feats: Optional[List[Tensor]] = None,
                                flipped: Optional[dict] = None
                                ) -> InstanceData:
        """SOLOv2's single-image inference, keeping track of the points that
        survive so that their embeddings can be returned.

        Args:
            kernel_preds (Tensor): (num_points, kernel_out_channels).
            cls_scores (Tensor): (num_points, num_classes), after point NMS.
            mask_feats (Tensor): (1, mask_out_channels, H/4, W/4).
            img_meta (dict): Meta information of the image.
            emb_preds (Tensor, optional): (num_points, D).
            cate_feats (list[Tensor], optional): Per level (feat_channels, G,
                G), to compute the embeddings of the kept points when
                ``emb_preds`` is None.
            cfg (dict, optional): Test config; defaults to ``test_cfg``.
            flipped (dict, optional): The mirror image's ``kernel_preds``,
                ``mask_feats`` and ``cate_feats`` (as above, not mirrored)
                and ``mirror`` (num_points, ) from :meth:`mirrored_points`:
                each kept cell's mask probabilities and embedding are then
                averaged with its mirrored cell's (mask flipped back), see
                :meth:`predict_flip_averaged`; ``cls_scores`` must already
                be the averaged ones.

        Returns:
            :obj:`InstanceData`: ``masks`` (n, h, w) bool at ``ori_shape``,
            ``scores`` (n, ) sorted descending, ``labels`` (n, ), ``bboxes``
            (n, 4) x1y1x2y2 tight around the masks, and ``embs`` (n, D)
            L2-normalised when the head predicts embeddings.
        """
        cfg = ConfigDict(self.test_cfg if cfg is None else cfg)
        h, w = img_meta['img_shape'][:2]
        upsampled_size = tuple(s * self.mask_stride
                               for s in mask_feats.shape[-2:])
        results = InstanceData(
            scores=cls_scores.new_zeros(0),
            labels=cls_scores.new_zeros(0, dtype=torch.long),
            masks=cls_scores.new_zeros(
                0, *img_meta['ori_shape'][:2], dtype=torch.bool))
        with_embs = emb_preds is not None or cate_feats is not None
        if with_embs:
            results.embs = cls_scores.new_zeros(0, self.emb_channels)

        point_inds, labels = (cls_scores > cfg.score_thr).nonzero(
            as_tuple=True)
        if len(point_inds) > 0:
            scores = cls_scores[point_inds, labels]
            strides = torch.cat([
                scores.new_full((num_grid**2, ), stride)
                for num_grid, stride in zip(self.num_grids, self.strides)
            ])[point_inds]
            kernels = kernel_preds[point_inds].view(
                len(point_inds), mask_feats.shape[1], self.dynamic_conv_size,
                self.dynamic_conv_size)
            mask_probs = F.conv2d(mask_feats, kernels)[0].sigmoid()
            if flipped is not None:
                mirrored_kernels = flipped['kernel_preds'][
                    flipped['mirror'][point_inds]].view_as(kernels)
                mask_probs = (mask_probs + F.conv2d(
                    flipped['mask_feats'],
                    mirrored_kernels)[0].sigmoid().flip(-1)) / 2
            masks = mask_probs > cfg.mask_thr
            areas = masks.sum((1, 2)).float()
            keep = areas > strides  # drop masks smaller than their stride
            point_inds, labels, mask_probs, masks, areas = (
                point_inds[keep], labels[keep], mask_probs[keep], masks[keep],
                areas[keep])
            maskness = (mask_probs * masks).sum((1, 2)) / areas
            scores, labels, _, keep_inds = mask_matrix_nms(
                masks,
                labels,
                scores[keep] * maskness,
                mask_area=areas,
                nms_pre=cfg.nms_pre,
                max_num=cfg.max_per_img,
                kernel=cfg.kernel,
                sigma=cfg.sigma,
                filter_thr=cfg.filter_thr)
            if len(keep_inds) > 0:
                masks = self.upsample_masks(mask_probs[keep_inds],
                                            upsampled_size, (h, w),
                                            img_meta['ori_shape'][:2],
                                            cfg.mask_thr)
                results = InstanceData(
                    scores=scores, labels=labels, masks=masks)
                if with_embs:
                    kept = point_inds[keep_inds]
                    results.embs = F.normalize(
                        emb_preds[kept] if emb_preds is not None else
                        self._emb_at_points(cate_feats, kept),
                        dim=1)
                    if flipped is not None:
                        results.embs = F.normalize(
                            results.embs + F.normalize(self._emb_at_points(
                                flipped['cate_feats'],
                                flipped['mirror'][kept]), dim=1),
                            dim=1)
        results.bboxes = tight_boxes(results.masks)
        return results
