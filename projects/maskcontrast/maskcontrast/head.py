"""Light dense head: fuses FPN levels into unit-norm pixel embeddings plus a linear mask head."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule

__all__ = ['MaskContrastHead']


@MODELS.register_module()
class MaskContrastHead(BaseModule):
    """Semantic-FPN-style fusion -> D-dim unit embeddings, and a 1x1 "saliency" (proposal) head.

    Every FPN level is upsampled to the finest one and summed, then ``num_convs`` 3x3 convs and a
    1x1 conv give the embedding. The mask head is linear: a 1x1 conv on the unit embeddings
    (``mask_head_input='embedding'``, which forces proposal pixels and the rest apart in the
    embedding space itself) or on the fused features before the projection
    (``'features'``, as the paper's decoder does).

    Args:
        in_channels (int): Channels of every FPN level.
        feat_channels (int): Channels of the fusion convs.
        embed_dims (int): D.
        num_levels (int): FPN levels used (the finest ``num_levels``).
        num_convs (int): 3x3 convs after the fusion.
        norm_cfg (dict): Norm of the fusion convs (GroupNorm: batch-size independent).
        mask_head_input (str): ``'embedding'`` or ``'features'``.
    """

    def __init__(self,
                 in_channels: int = 64,
                 feat_channels: int = 64,
                 embed_dims: int = 32,
                 num_levels: int = 3,
                 num_convs: int = 1,
                 norm_cfg: Optional[dict] = dict(type='GN', num_groups=8, requires_grad=True),
                 mask_head_input: str = 'embedding',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if mask_head_input not in ('embedding', 'features'):
            raise ValueError(f'mask_head_input must be "embedding" or "features", got {mask_head_input!r}')
        self.num_levels, self.embed_dims, self.mask_head_input = num_levels, embed_dims, mask_head_input
        self.lateral = nn.ModuleList(
            ConvModule(in_channels, feat_channels, 3, padding=1, norm_cfg=norm_cfg) for _ in range(num_levels))
        self.convs = nn.Sequential(*[
            ConvModule(feat_channels, feat_channels, 3, padding=1, norm_cfg=norm_cfg) for _ in range(num_convs)])
        self.embed = nn.Conv2d(feat_channels, embed_dims, 1)
        self.mask_head = nn.Conv2d(embed_dims if mask_head_input == 'embedding' else feat_channels, 1, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """FPN levels (finest first, (B, C, H_l, W_l)) -> embeddings (B, D, H_0, W_0), unit norm
        along D, and mask logits (B, 1, H_0, W_0)."""
        if len(feats) < self.num_levels:
            raise ValueError(f'{len(feats)} feature levels, the head needs {self.num_levels}')
        size = feats[0].shape[-2:]
        fused = 0
        for level, conv in enumerate(self.lateral):
            x = conv(feats[level])
            fused = fused + (x if level == 0 else F.interpolate(x, size, mode='bilinear', align_corners=False))
        fused = self.convs(fused)
        emb = F.normalize(self.embed(fused), dim=1)
        logits = self.mask_head(emb if self.mask_head_input == 'embedding' else fused)
        return emb, logits
