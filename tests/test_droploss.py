"""DropLoss (CutLER) option of FreeSOLOHead: no category loss on negative cells whose predicted mask overlaps
no pseudo label (spec section 7)."""
from typing import List, Optional, Tuple

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.model import BaseModel
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import SOLOV2Head
from mmdet.models.losses import FocalLoss
from mmdet.testing import demo_mm_inputs

from freesolo_mmdet.models.dense_heads.freesolo_head import FreeSOLOHead
from test_freesolo_head import (IMG, TEST_CFG, build_full_model, build_head, data_samples, fpn_feats,
                                square_instances)

FEAT = IMG // 4  # mask-feature resolution of the test head
LEFT_BOXES = [  # pseudo labels of the hand-made cases, all in the left half (x < 64) of the image
    [[8, 8, 48, 48], [10, 70, 50, 110]],
    [[16, 16, 56, 56]],
]


def focal() -> FocalLoss:
    """SOLOv2's default category loss, built independently of the head."""
    return FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)


def stock_targets(head: FreeSOLOHead, gts: List[InstanceData]) -> Tuple[Tensor, Tensor, int]:
    """Stock SOLOv2 assignment of a batch: flattened labels and positive flags in the category loss's order
    (level, image, row-major cell), (num_cells, ) each, and the number of positive cells."""
    targets = [SOLOV2Head._get_targets_single(head, gt, (FEAT, FEAT)) for gt in gts]
    labels = torch.cat([targets[img][1][lvl].flatten() for lvl in range(5) for img in range(len(gts))])
    pos = torch.cat([targets[img][2][lvl] for lvl in range(5) for img in range(len(gts))])
    return labels, pos, int(pos.sum())


def flat(mlvl: List[Tensor]) -> Tensor:
    """(num_cells, C) in the category loss's order from per level (B, C, G, G)."""
    return torch.cat([lvl.permute(0, 2, 3, 1).reshape(-1, lvl.shape[1]) for lvl in mlvl])


def half_plane_case(head: FreeSOLOHead, right_logit: float = 5.0,
                    left_logit: float = 5.0) -> Tuple[list, Tensor, list, list, Tensor]:
    """Hand-made outputs of a batch of 2: mask features whose channel 0 is 1 on the left half and channel 1 on the
    right half; ~40 % of the cells (random, some positive) have a kernel whose mask is the right half, where there
    is no pseudo label, the others a kernel whose mask is the left half, which overlaps every pseudo label.

    Returns:
        tuple: ``kernel_preds`` (per level (2, 16, G, G), requiring grad), ``cls_preds`` (per level (2, 1, G, G),
        requiring grad), ``mask_feats`` (2, 16, FEAT, FEAT), ``gts`` and ``right`` (num_cells, ) bool in the
        category loss's order: the cells whose mask is the right half.
    """
    generator = torch.Generator().manual_seed(3)
    mask_feats = torch.zeros(2, 16, FEAT, FEAT)
    mask_feats[:, 0, :, :FEAT // 2] = 1
    mask_feats[:, 1, :, FEAT // 2:] = 1
    kernel_preds, cls_preds, mlvl_right = [], [], []
    for grid in head.num_grids:
        right = torch.rand(2, 1, grid, grid, generator=generator) < 0.4
        kernels = torch.randn(2, 16, grid, grid, generator=generator)  # channels 2.. meet zero features
        kernels[:, 0] = torch.where(right[:, 0], -right_logit, left_logit)
        kernels[:, 1] = torch.where(right[:, 0], right_logit, -10.)
        kernel_preds.append(kernels.requires_grad_())
        cls_preds.append(torch.randn(2, 1, grid, grid, generator=generator).requires_grad_())
        mlvl_right.append(right)
    right = flat(mlvl_right)[:, 0]
    gts = [square_instances(boxes, [0] * len(boxes)) for boxes in LEFT_BOXES]
    return kernel_preds, cls_preds, mask_feats, gts, right


def loss_by_feat(head: FreeSOLOHead, kernel_preds: list, cls_preds: list, mask_feats: Tensor,
                 gts: List[InstanceData]) -> dict:
    metas = [dict(img_shape=(IMG, IMG), batch_input_shape=(IMG, IMG))] * len(gts)
    return head.loss_by_feat(kernel_preds, cls_preds, mask_feats, None, gts, metas)


def small_head(drop_loss_thr: Optional[float], **overrides) -> FreeSOLOHead:
    return build_head(loss_mask_pairwise=None, with_emb=False, drop_loss_thr=drop_loss_thr, **overrides)


def test_off_by_default_gives_the_stock_category_loss():
    head = build_head()
    assert head.drop_loss_thr is None
    samples = data_samples()
    losses = head.loss(fpn_feats(), samples)
    assert 'drop_frac' not in losses
    _, cls_preds, _, _ = head(fpn_feats())
    labels, _, num_pos = stock_targets(head, [s.gt_instances for s in samples])
    expected = focal()(flat(cls_preds), labels, avg_factor=num_pos + 1)
    torch.testing.assert_close(losses['loss_cls'], expected, rtol=0, atol=0)

    # threshold 0 drops nothing (no IoU is below 0): every loss as with the option off, bit for bit
    on = build_head(drop_loss_thr=0.0)
    got = on.loss(fpn_feats(), data_samples())
    assert set(got) == set(losses) | {'drop_frac'} and got['drop_frac'].item() == 0
    for name in losses:
        torch.testing.assert_close(got[name], losses[name], rtol=0, atol=0)


def constant_masks_head(drop_loss_thr: float) -> FreeSOLOHead:
    """A head whose every cell predicts the whole image as its mask: the mask features are 1 everywhere (zero
    conv, GN bias 1, ReLU) and every kernel is 0.1 per channel (logit 1.6, probability 0.83)."""
    head = small_head(drop_loss_thr)
    with torch.no_grad():
        head.mask_feature_head.conv_pred.conv.weight.zero_()
        head.mask_feature_head.conv_pred.norm.bias.fill_(1.)
        head.conv_kernel.weight.zero_()
        head.conv_kernel.bias.fill_(0.1)
    return head


def test_nothing_dropped_when_every_mask_overlaps_a_pseudo_label():
    # whole-image masks: IoU with a 40x40 box of a 128x128 image is about 100 / 1024 at the mask-feature resolution
    samples = data_samples(with_embs=False, with_color=False)
    for sample, boxes in zip(samples, LEFT_BOXES):
        sample.gt_instances = square_instances(boxes, [0] * len(boxes))
    off = constant_masks_head(None).loss(fpn_feats(), samples)
    on = constant_masks_head(0.01).loss(fpn_feats(), samples)
    assert on['drop_frac'].item() == 0
    for name in off:
        torch.testing.assert_close(on[name], off[name], rtol=0, atol=0)

    # above that IoU every negative cell is dropped: the category loss of the positive cells alone
    high = constant_masks_head(0.2).loss(fpn_feats(), samples)
    assert high['drop_frac'].item() == 1
    head = constant_masks_head(0.2)
    _, cls_preds, _, _ = head(fpn_feats())
    labels, pos, num_pos = stock_targets(head, [s.gt_instances for s in samples])
    expected = focal()(flat(cls_preds)[pos], labels[pos], avg_factor=num_pos + 1)
    torch.testing.assert_close(high['loss_cls'], expected)
    assert high['loss_cls'] < off['loss_cls']


def test_negative_cells_predicting_an_empty_region_get_no_category_loss():
    head = small_head(0.01)
    kernel_preds, cls_preds, mask_feats, gts, right = half_plane_case(head)
    labels, pos, num_pos = stock_targets(head, gts)
    dropped = right & ~pos
    assert (right & pos).any() and dropped.any() and (~right & ~pos).any()
    losses = loss_by_feat(head, kernel_preds, cls_preds, mask_feats, gts)

    keep = ~dropped
    expected = focal()(flat(cls_preds)[keep], labels[keep], avg_factor=num_pos + 1)
    torch.testing.assert_close(losses['loss_cls'], expected)
    torch.testing.assert_close(losses['drop_frac'], dropped.sum() / (~pos).sum())
    everything = focal()(flat(cls_preds), labels, avg_factor=num_pos + 1)
    assert losses['loss_cls'] < everything

    off = loss_by_feat(small_head(None), kernel_preds, cls_preds, mask_feats, gts)
    torch.testing.assert_close(off['loss_cls'], everything)
    for name in ('loss_maxproj', 'loss_avgproj'):  # the mask losses do not change
        torch.testing.assert_close(losses[name], off[name], rtol=0, atol=0)

    # gradients: none to the dropped cells' scores, some to every kept cell's; the kernels' gradients come from
    # the mask losses only (the IoU is computed without gradient), on positive cells
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert not losses['drop_frac'].requires_grad
    cls_grads = flat([p.grad for p in cls_preds])[:, 0]
    assert torch.all(cls_grads[dropped] == 0) and torch.all(cls_grads[keep] != 0)
    kernel_grads = flat([torch.zeros_like(k) if k.grad is None else k.grad for k in kernel_preds]).abs().sum(1)
    assert torch.all(kernel_grads[~pos] == 0) and torch.all(kernel_grads[pos] > 0)


def test_an_image_without_pseudo_labels_gets_no_category_loss():
    head = small_head(0.01)
    kernel_preds, cls_preds, mask_feats, gts, right = half_plane_case(head)
    gts[1] = gts[1][torch.zeros(0, dtype=torch.long)]
    labels, pos, num_pos = stock_targets(head, gts)
    losses = loss_by_feat(head, kernel_preds, cls_preds, mask_feats, gts)
    image_1 = torch.cat([torch.arange(2 * g * g) >= g * g for g in head.num_grids])  # second image's cells
    assert not (image_1 & pos).any()
    keep = ~image_1 & ~(right & ~pos)
    expected = focal()(flat(cls_preds)[keep], labels[keep], avg_factor=num_pos + 1)
    torch.testing.assert_close(losses['drop_frac'], (image_1 | (right & ~pos)).sum() / (~pos).sum())
    torch.testing.assert_close(losses['loss_cls'], expected)
    losses['loss_cls'].backward()
    assert torch.all(flat([p.grad for p in cls_preds])[image_1] == 0)


@pytest.mark.parametrize('mask_thr, dropped', [(0.5, True), (0.3, False)])
def test_predicted_mask_is_thresholded_at_test_cfg_mask_thr(mask_thr, dropped):
    # left-half kernels now give probability sigmoid(-0.405) = 0.4 on the left half, ~0 on the right half: an empty
    # mask at the default threshold 0.5 (dropped), the left half at 0.3 (kept)
    head = small_head(0.01, test_cfg=ConfigDict(TEST_CFG, mask_thr=mask_thr))
    kernel_preds, cls_preds, mask_feats, gts, right = half_plane_case(head, left_logit=-0.405)
    _, pos, _ = stock_targets(head, gts)
    losses = loss_by_feat(head, kernel_preds, cls_preds, mask_feats, gts)
    expected = (~pos).sum() if dropped else (right & ~pos).sum()
    torch.testing.assert_close(losses['drop_frac'], expected / (~pos).sum())


def test_chunking_does_not_change_the_result():
    head = small_head(0.01)
    kernel_preds, _, mask_feats, _ = head(fpn_feats())
    gts = [s.gt_instances for s in data_samples()]
    targets = [head._get_targets_single(gt, (FEAT, FEAT)) for gt in gts]
    args = (kernel_preds, mask_feats, gts, [t[0] for t in targets], [t[2] for t in targets], [t[4] for t in targets])
    weights, frac = head._drop_loss_weights(*args)
    assert weights.shape == (2 * sum(g * g for g in head.num_grids), ) and 0 < frac < 1
    head.drop_loss_chunk = 7
    chunked = head._drop_loss_weights(*args)
    assert torch.equal(chunked[0], weights) and torch.equal(chunked[1], frac)


def test_pseudo_labels_without_positive_cells_are_downsampled_too():
    # the small square is outside every scale range of the test head (sqrt(area) < 1 is impossible, so shrink the
    # ranges): it has no positive cell but still counts as a pseudo label
    head = small_head(0.01, scale_ranges=((30, 48), (48, 64), (64, 96), (96, 192), (192, 2048)))
    gt = square_instances([[8, 8, 48, 48], [80, 80, 96, 96]], [0, 0])
    targets = head._get_targets_single(gt, (FEAT, FEAT))
    assert set(torch.cat(targets[4]).tolist()) == {0}
    masks = head._pseudo_label_masks(gt, targets[0], targets[4], (FEAT, FEAT), torch.device('cpu'))
    expected = torch.zeros(2, FEAT, FEAT, dtype=torch.bool)
    expected[0, 2:12, 2:12] = True
    expected[1, 20:24, 20:24] = True
    assert torch.equal(masks, expected)


def test_drop_frac_is_logged_not_summed_and_gradients_flow():
    model = build_full_model()
    model.mask_head.drop_loss_thr = 0.01
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 128), (3, 128, 100)], num_items=[2, 1],
                            num_classes=2, with_mask=True)
    for sample in packed['data_samples']:
        sample.gt_instances.labels[:] = 0
        sample.gt_instances.embs = torch.randn(len(sample.gt_instances), 128)
    data = model.data_preprocessor(packed, training=True)
    losses = model(**data, mode='loss')
    assert 0 <= losses['drop_frac'] <= 1
    total, log_vars = BaseModel.parse_losses(model, losses)
    assert 'drop_frac' in log_vars
    torch.testing.assert_close(total, sum(v for k, v in losses.items() if k != 'drop_frac'))
    total.backward()
    head = model.mask_head
    for module in (head.conv_kernel, head.conv_cls, head.kernel_convs[0].conv, head.cls_convs[0].conv):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_threshold_is_validated():
    with pytest.raises(ValueError, match='drop_loss_thr'):
        build_head(drop_loss_thr=1.5)
