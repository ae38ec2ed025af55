"""The mask-contrastive loss of MaskContrast (Van Gansbeke et al., ICCV 2021), on tensors.

For a pixel ``i`` of mask ``M`` in the query view, with unit embedding ``z_i`` and the unit mean
embeddings ("prototypes") ``p`` of the masks in the key view::

    loss_i = -log( exp(z_i . p_M / T) / sum_{p in batch prototypes + memory bank} exp(z_i . p / T) )

i.e. a cross-entropy over [positive prototype, the other in-batch prototypes, the memory bank],
averaged over every foreground pixel whose mask is present in both views.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS

__all__ = ['labels_to_masks', 'mask_prototypes', 'mask_contrastive_loss', 'MaskContrastLoss']


def labels_to_masks(labels: torch.Tensor, num_masks: Optional[int] = None) -> torch.Tensor:
    """(B, H, W) long label maps (0 = none, k = proposal k) -> (B, M, H, W) bool masks, mask ``m``
    being label ``m + 1``; ``M`` defaults to the largest label in the batch (at least 1)."""
    if num_masks is None:
        num_masks = max(int(labels.max()), 1)
    ks = torch.arange(1, num_masks + 1, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == ks


def mask_prototypes(embeddings: torch.Tensor, masks: torch.Tensor,
                    eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit mean embedding of every mask.

    Args:
        embeddings (Tensor): (B, D, H, W) pixel embeddings.
        masks (Tensor): (B, M, H, W) bool (or {0, 1}) masks.

    Returns:
        tuple: prototypes (B, M, D), L2-normalised means (zero for empty masks), and
        valid (B, M) bool, True for non-empty masks.
    """
    weights = masks.flatten(2).to(embeddings.dtype)  # (B, M, HW)
    sums = torch.bmm(weights, embeddings.flatten(2).transpose(1, 2))  # (B, M, D)
    area = weights.sum(-1)  # (B, M)
    valid = area > 0
    means = sums / area.clamp(min=1).unsqueeze(-1)
    return F.normalize(means, dim=-1, eps=eps) * valid.unsqueeze(-1), valid


def mask_contrastive_loss(query: torch.Tensor,
                          query_masks: torch.Tensor,
                          key_prototypes: torch.Tensor,
                          key_valid: torch.Tensor,
                          memory: Optional[torch.Tensor] = None,
                          temperature: float = 0.5) -> torch.Tensor:
    """Mask-contrastive cross-entropy (see the module docstring).

    Args:
        query (Tensor): (B, D, H, W) unit-norm pixel embeddings of the query view.
        query_masks (Tensor): (B, M, H, W) bool non-overlapping masks in the query view.
        key_prototypes (Tensor): (B, M, D) unit prototypes of the same masks in the key view.
        key_valid (Tensor): (B, M) bool, mask present in the key view.
        memory (Tensor, optional): (K, D) unit negatives (prototypes of earlier batches).
        temperature (float): The softmax temperature T.

    Returns:
        Tensor: scalar mean over the P foreground pixels whose mask is valid in the key view
        (0, with a gradient path, when P = 0).
    """
    batch, dims, height, width = query.shape
    num_masks = query_masks.shape[1]
    if key_prototypes.shape != (batch, num_masks, dims) or key_valid.shape != (batch, num_masks):
        raise ValueError(f'shapes do not fit: query {tuple(query.shape)}, masks {tuple(query_masks.shape)}, '
                         f'prototypes {tuple(key_prototypes.shape)}, valid {tuple(key_valid.shape)}')
    owned = query_masks.bool() & key_valid[:, :, None, None]  # (B, M, H, W)
    pixel_has, owner = owned.max(dim=1)  # (B, H, W)
    if not pixel_has.any():
        return query.sum() * 0.
    pixels = query.permute(0, 2, 3, 1)[pixel_has]  # (P, D)
    batch_index = torch.arange(batch, device=query.device).view(-1, 1, 1).expand_as(owner)[pixel_has]
    target = batch_index * num_masks + owner[pixel_has]  # (P, ) index into B*M prototypes
    prototypes = key_prototypes.reshape(batch * num_masks, dims)
    logits = pixels @ prototypes.t()  # (P, B*M)
    logits = logits.masked_fill(~key_valid.reshape(1, -1), float('-inf'))
    if memory is not None and memory.numel():
        logits = torch.cat([logits, pixels @ memory.t()], dim=1)  # (P, B*M + K)
    return F.cross_entropy(logits / temperature, target)


@MODELS.register_module()
class MaskContrastLoss(nn.Module):
    """Module form of :func:`mask_contrastive_loss`, times ``loss_weight``."""

    def __init__(self, temperature: float = 0.5, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature, self.loss_weight = temperature, loss_weight

    def forward(self, query: torch.Tensor, query_masks: torch.Tensor, key_prototypes: torch.Tensor,
                key_valid: torch.Tensor, memory: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.loss_weight * mask_contrastive_loss(query, query_masks, key_prototypes, key_valid, memory,
                                                        self.temperature)
