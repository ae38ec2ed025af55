"""MaskContrast: a dense pixel-embedding network trained by contrasting object mask proposals."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.model import BaseModel, ExponentialMovingAverage
from mmengine.structures import PixelData

from .loss import labels_to_masks, mask_prototypes
from .memory_bank import PrototypeMemoryBank

__all__ = ['MaskContrast', 'resize_labels', 'FEATURE_SOURCES']

#: what ``predict`` returns per pixel (``test_cfg.feature_source``); ``backbone.<i>`` for any level i
FEATURE_SOURCES = ('embedding', 'backbone.cat', 'backbone.<i>')


def resize_labels(labels: torch.Tensor, size: Tuple[int, int], num_masks: int) -> torch.Tensor:
    """(B, H, W) label maps -> (B, h, w) by area vote: each output pixel takes the label covering
    most of its footprint (0 = none included), so small proposals survive better than nearest."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    onehot = F.one_hot(labels.clamp(max=num_masks), num_masks + 1).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(onehot, size).argmax(1)


@MODELS.register_module()
class MaskContrast(BaseModel):
    """Backbone + neck + :class:`MaskContrastHead`, with a momentum key encoder, as an mmengine model.

    ``loss`` (one training step): the query network embeds view 1, the key network (an EMA copy with
    ``momentum``, or the query network without gradient when ``momentum`` is None) embeds view 2;
    view 2's proposal prototypes are the positives/negatives of view 1's proposal pixels, plus a
    memory bank of earlier prototypes (gathered over DDP ranks). A BCE loss makes the linear mask
    head predict the union of the proposals (the paper's guard against collapse).

    The key encoder is mmengine's :class:`ExponentialMovingAverage` of the query parts, a submodule,
    so that it is saved in and resumed from mmengine checkpoints (``key_encoder.module.*``,
    ``key_encoder.steps``), as is the memory bank (``memory.*``). As in MoCo it is updated at the
    start of each ``loss`` call (``key = m * key + (1 - m) * query``), which is the update after
    the previous optimizer step, also under DDP, whose ``train_step`` bypasses the model's own.
    :meth:`init_weights` makes it a copy of the initialised query network.

    Args:
        backbone (dict): mmdet backbone config.
        neck (dict): mmdet neck config (e.g. ``FPN``).
        head (dict): :class:`MaskContrastHead` config.
        loss_contrast (dict): :class:`MaskContrastLoss` config.
        loss_mask (dict): BCE config for the mask head (mmdet ``CrossEntropyLoss`` with sigmoid).
        momentum (float, optional): EMA momentum of the key encoder; None: no key encoder.
        memory_size (int): Prototypes kept as extra negatives (paper: 128).
        loss_stride (int): Losses are computed at input / ``loss_stride`` (embeddings upsampled
            bilinearly and renormalised, proposals area-voted down).
        max_masks (int): Proposals per image used in a step.
        symmetric (bool): Also use view 2 as query and view 1 as key.
        mean, std (sequence): RGB normalisation of the [0, 255] input.
        test_cfg (dict, optional): ``feature_source``: what ``predict`` returns, ``'embedding'``
            (default, the unit embeddings), ``'backbone.<i>'`` (level i of the backbone) or
            ``'backbone.cat'`` (every level L2-normalised, upsampled to the finest, concatenated).
        data_preprocessor (dict, optional): mmengine data preprocessor (default: moves to device).
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict],
                 head: dict,
                 loss_contrast: dict = dict(type='MaskContrastLoss', temperature=0.5),
                 loss_mask: dict = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 momentum: Optional[float] = 0.99,
                 memory_size: int = 128,
                 loss_stride: int = 4,
                 max_masks: int = 20,
                 symmetric: bool = False,
                 mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375),
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.head = MODELS.build(head)
        self.loss_contrast = MODELS.build(loss_contrast)
        self.loss_mask = MODELS.build(loss_mask)
        self.momentum, self.loss_stride, self.max_masks, self.symmetric = momentum, loss_stride, max_masks, symmetric
        self.test_cfg = {'feature_source': 'embedding', **(test_cfg or {})}
        self.feature_fn(self.test_cfg['feature_source'])  # an unknown source fails here, not at test time
        self.memory = PrototypeMemoryBank(memory_size, self.head.embed_dims)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.key_encoder: Optional[ExponentialMovingAverage] = None
        if momentum is not None:
            # mmengine's momentum weighs the *new* value: key = (1 - m) * key + m * query with m = 1 - momentum
            self.key_encoder = ExponentialMovingAverage(self.encoder_modules(), momentum=1 - momentum)
            # MoCo: the key starts as a copy of the query and is averaged from the first update on
            # (mmengine would copy the query again at its step 0)
            self.key_encoder.steps.fill_(1)

    # ------------------------------------------------------------------ encoders
    def encoder_modules(self) -> nn.ModuleDict:
        """The query encoder's parts, in the layout of the key encoder."""
        parts = dict(backbone=self.backbone, head=self.head)
        if self.neck is not None:
            parts['neck'] = self.neck
        return nn.ModuleDict(parts)

    def init_weights(self) -> None:
        """Initialise the query network (``init_cfg``s, e.g. the pretrained backbone), then make the
        key encoder a copy of it. A local pretrained file that is missing stops it with the fix."""
        init = getattr(self.backbone, 'init_cfg', None) or {}
        ckpt = init.get('checkpoint') if isinstance(init, dict) else None
        if ckpt and '://' not in ckpt and not osp.isfile(ckpt):
            raise FileNotFoundError(
                f'pretrained backbone not found: {ckpt}. For the demo config create it with: python -c "from '
                'freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2 as c; '
                f"c('{ckpt}')\"")
        super().init_weights()
        if self.key_encoder is not None:
            self.key_encoder.module.load_state_dict(self.encoder_modules().state_dict())
            self.key_encoder.steps.fill_(1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key = m * key + (1 - m) * query on parameters; buffers copied."""
        if self.key_encoder is not None:
            self.key_encoder.update_parameters(self.encoder_modules())

    def _embed_with(self, parts, img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = (img - self.mean) / self.std
        feats = parts['backbone'](x)
        if 'neck' in parts:
            feats = parts['neck'](feats)
        return parts['head'](feats)

    def embed(self, img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB in [0, 255] -> unit embeddings (B, D, h, w) and mask logits (B, 1, h, w)
        at the head's stride (8 with an FPN from stride 8)."""
        return self._embed_with(self.encoder_modules(), img)

    def backbone_features(self, img: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The raw backbone levels, (B, C_l, H_l, W_l) each (for the "before training" baselines)."""
        return tuple(self.backbone((img - self.mean) / self.std))

    def feature_fn(self, source: str):
        """A function (B, 3, H, W) images -> (B, C, h, w) per-pixel features of ``source`` (see
        ``test_cfg``); raises ValueError for an unknown source."""
        if source == 'embedding':
            return lambda img: self.embed(img)[0]
        if source == 'backbone.cat':
            def cat(img):
                levels = self.backbone_features(img)
                size = levels[0].shape[-2:]
                return torch.cat([F.interpolate(F.normalize(f, dim=1), size, mode='bilinear', align_corners=False)
                                  for f in levels], dim=1)
            return cat
        if source.startswith('backbone.') and source.split('.', 1)[1].isdigit():
            index = int(source.split('.', 1)[1])
            return lambda img: self.backbone_features(img)[index]
        raise ValueError(f'unknown feature source {source!r}: one of {", ".join(FEATURE_SOURCES)}')

    # ------------------------------------------------------------------ mmengine entry points
    def forward(self,
                inputs: Union[torch.Tensor, List[torch.Tensor]],
                data_samples: Optional[Union[dict, List[DetDataSample]]] = None,
                mode: str = 'tensor'):
        """mmengine's entry point.

        - ``'loss'``: ``inputs`` (B, 2, 3, S, S) two views, ``data_samples`` ``dict(proposals=(B, 2, S, S))``
          -> dict of losses (:meth:`loss`).
        - ``'predict'``: ``inputs`` (3, H, W) images (a list, or a (B, 3, H, W) tensor), ``data_samples``
          their :class:`DetDataSample` -> the same samples with ``pred_feats`` (:meth:`predict`).
        - ``'tensor'``: (B, 3, H, W) images -> unit embeddings (B, D, h, w).
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.embed(inputs)[0]
        raise ValueError(f'invalid mode {mode!r}: loss, predict or tensor')

    @torch.no_grad()
    def predict(self, inputs: Union[torch.Tensor, List[torch.Tensor]],
                data_samples: List[DetDataSample]) -> List[DetDataSample]:
        """Per-pixel features of each image as ``pred_feats.data`` (C, h, w), L2-normalised per pixel,
        at the feature's own stride (``test_cfg.feature_source``). Images of one size run as one batch."""
        fn = self.feature_fn(self.test_cfg['feature_source'])
        images = list(inputs)
        if all(img.shape == images[0].shape for img in images):
            feats = list(fn(torch.stack(images).float()))
        else:
            feats = [fn(img[None].float())[0] for img in images]
        for sample, feat in zip(data_samples, feats):
            sample.pred_feats = PixelData(data=F.normalize(feat.float(), dim=0))
        return data_samples

    def _upsampled(self, emb: torch.Tensor, logits: torch.Tensor, size) -> Tuple[torch.Tensor, torch.Tensor]:
        if tuple(emb.shape[-2:]) != tuple(size):
            emb = F.normalize(F.interpolate(emb, size, mode='bilinear', align_corners=False), dim=1)
            logits = F.interpolate(logits, size, mode='bilinear', align_corners=False)
        return emb, logits

    def _one_direction(self, img_q, labels_q, img_k, labels_k) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        size = (img_q.shape[-2] // self.loss_stride, img_q.shape[-1] // self.loss_stride)
        num_masks = self.max_masks
        # proposals beyond max_masks are dropped (they count as "no proposal")
        labels_q = resize_labels(labels_q * (labels_q <= num_masks), size, num_masks)
        labels_k = resize_labels(labels_k * (labels_k <= num_masks), size, num_masks)
        used = max(int(labels_q.max()), int(labels_k.max()), 1)
        masks_q, masks_k = labels_to_masks(labels_q, used), labels_to_masks(labels_k, used)

        emb_q, logits_q = self._upsampled(*self.embed(img_q), size)
        with torch.no_grad():
            parts = self.key_encoder.module if self.key_encoder is not None else self.encoder_modules()
            emb_k, _ = self._upsampled(*self._embed_with(parts, img_k), size)
            protos_k, valid_k = mask_prototypes(emb_k, masks_k)
        loss_contrast = self.loss_contrast(emb_q, masks_q, protos_k, valid_k, self.memory.negatives())
        target = (labels_q > 0).float().unsqueeze(1)
        loss_mask = self.loss_mask(logits_q.flatten(), target.flatten())
        return dict(loss_contrast=loss_contrast, loss_mask=loss_mask), protos_k[valid_k]

    def loss(self, inputs: torch.Tensor, data_samples: dict) -> Dict[str, torch.Tensor]:
        """Losses of one batch of two views; updates the key encoder first and the memory bank after.

        Args:
            inputs (Tensor): (B, 2, 3, S, S) float RGB views in [0, 255], view 1 then view 2.
            data_samples (dict): ``proposals``, (B, 2, S, S) long proposal maps of the two views
                (0 = none; the same k in both).

        Returns:
            dict: ``loss_contrast`` and ``loss_mask`` (scalars).
        """
        proposals = data_samples['proposals']
        if inputs.dim() != 5 or inputs.shape[1] != 2 or proposals.shape[:2] != inputs.shape[:2]:
            raise ValueError(f'expected (B, 2, 3, S, S) views and (B, 2, S, S) proposals, got {tuple(inputs.shape)} '
                             f'and {tuple(proposals.shape)}')
        img1, img2 = inputs[:, 0].float(), inputs[:, 1].float()
        label1, label2 = proposals[:, 0], proposals[:, 1]
        self.momentum_update()
        losses, new_protos = self._one_direction(img1, label1, img2, label2)
        if self.symmetric:
            losses2, protos2 = self._one_direction(img2, label2, img1, label1)
            losses = {k: (v + losses2[k]) / 2 for k, v in losses.items()}
            new_protos = torch.cat([new_protos, protos2])
        self.memory.enqueue(new_protos)
        return losses
