"""Tests of FreeSOLOHead: target assignment, losses, prediction, full model."""
import copy

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import SOLOV2Head
from mmdet.registry import MODELS
from mmdet.structures.mask import BitmapMasks, mask2bbox
from mmdet.testing import demo_mm_inputs

import freesolo_mmdet.models.data_preprocessors.color_similarity  # noqa: F401
import freesolo_mmdet.models.losses.pairwise_affinity_loss  # noqa: F401
import freesolo_mmdet.models.losses.projection_loss  # noqa: F401
from freesolo_mmdet.models.dense_heads.freesolo_head import FreeSOLOHead
from freesolo_mmdet.models.losses.projection_loss import MaxProjLoss

IMG = 128
STRIDES = (4, 8, 16, 32, 64)
TEST_CFG = dict(
    nms_pre=500,
    score_thr=0.1,
    mask_thr=0.5,
    filter_thr=0.05,
    kernel='gaussian',
    sigma=2.0,
    max_per_img=100)


def head_cfg(**overrides) -> dict:
    """A small FreeSOLO head config on 32-channel FPN features."""
    cfg = dict(
        type='FreeSOLOHead',
        in_channels=32,
        feat_channels=32,
        stacked_convs=1,
        strides=STRIDES,
        scale_ranges=((1, 24), (24, 48), (48, 96), (96, 192), (192, 2048)),
        num_grids=[12, 10, 8, 6, 4],
        norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
        mask_feature_head=dict(
            feat_channels=16,
            start_level=0,
            end_level=3,
            out_channels=16,
            mask_stride=4,
            norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
        loss_mask_pairwise=dict(type='PairwiseAffinityLoss', warmup_iters=0),
        test_cfg=ConfigDict(TEST_CFG))
    cfg.update(overrides)
    return cfg


def build_head(**overrides) -> FreeSOLOHead:
    torch.manual_seed(0)
    head = MODELS.build(head_cfg(**overrides))
    head.init_weights()
    return head


def fpn_feats(batch_size: int = 2) -> list:
    torch.manual_seed(1)
    return [torch.randn(batch_size, 32, IMG // s, IMG // s) for s in STRIDES]


def data_samples(with_embs: bool = True, with_color: bool = True) -> list:
    """Demo samples: every label 0, random embeddings, hand-made colour
    similarity (a ramp, so some pairs pass the 0.3 threshold)."""
    samples = demo_mm_inputs(
        batch_size=2,
        image_shapes=[(3, IMG, IMG), (3, IMG, IMG)],
        num_items=[3, 2],
        num_classes=2,
        with_mask=True)['data_samples']
    generator = torch.Generator().manual_seed(2)
    for sample in samples:
        sample.set_metainfo(dict(batch_input_shape=(IMG, IMG)))
        sample.gt_instances.labels[:] = 0
        if with_embs:
            sample.gt_instances.embs = torch.randn(
                len(sample.gt_instances), 128, generator=generator)
        if with_color:
            sample.color_similarity = torch.linspace(0, 1, 8 * 32 * 32).view(
                8, 32, 32)
    return samples


def square_instances(boxes: list, labels: list) -> InstanceData:
    """Instances whose masks fill the given x1y1x2y2 boxes of an IMG image."""
    masks = np.zeros((len(boxes), IMG, IMG), dtype=np.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2, x1:x2] = 1
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32),
        labels=torch.tensor(labels),
        masks=BitmapMasks(masks, IMG, IMG))


def test_targets_equal_solov2_and_point_to_their_gt():
    # two same-centre squares share cells at level 1: the later one must win
    # the label, both must be listed, each with its own gt index
    head = build_head(num_classes=3)
    gt = square_instances([[40, 40, 70, 70], [42, 42, 68, 68], [0, 0, 8, 8]],
                          [0, 1, 2])
    featmap_sizes = (IMG // 4, IMG // 4)
    mask_targets, labels, pos_masks, pos_indexes, pos_gt_inds = \
        head._get_targets_single(gt, featmap_sizes)
    ref = SOLOV2Head._get_targets_single(head, gt, featmap_sizes)
    for lvl in range(5):
        assert torch.equal(mask_targets[lvl], ref[0][lvl])
        assert torch.equal(labels[lvl], ref[1][lvl])
        assert torch.equal(pos_masks[lvl], ref[2][lvl])
        assert pos_indexes[lvl] == ref[3][lvl]
        for target, gt_ind in zip(mask_targets[lvl], pos_gt_inds[lvl]):
            expected = mmcv.imrescale(gt.masks.masks[gt_ind], 0.25)
            assert torch.equal(target, torch.from_numpy(expected))
    assert pos_gt_inds[1].tolist().count(0) == pos_gt_inds[1].tolist().count(1)
    assert len(set(pos_indexes[1])) < len(pos_indexes[1])  # shared cells
    assert set(pos_gt_inds[0].tolist()) == {2}
    empty = head._get_targets_single(gt[torch.zeros(0, dtype=torch.long)],
                                     featmap_sizes)
    assert all(len(inds) == 0 for inds in empty[4])


def test_loss_keys_finite_and_gradients():
    head = build_head()
    losses = head.loss(fpn_feats(), data_samples())
    assert set(losses) == {'loss_maxproj', 'loss_avgproj', 'loss_pairwise',
                           'loss_cls', 'loss_emb'}
    for name, value in losses.items():
        assert torch.isfinite(value) and value > 0, name
    sum(losses.values()).backward()
    for module in (head.conv_emb, head.conv_kernel, head.conv_cls,
                   head.kernel_convs[0].conv, head.cls_convs[0].conv,
                   head.mask_feature_head.conv_pred.conv):
        assert module.weight.grad is not None
        assert module.weight.grad.abs().sum() > 0


def test_mask_losses_are_averaged_over_levels():
    # one instance on level 0 and one on level 2 of a single image
    head = build_head(loss_mask_pairwise=None, with_emb=False)
    gt = square_instances([[4, 4, 20, 20], [30, 30, 90, 90]], [0, 0])
    sample = data_samples()[0]
    sample.gt_instances = gt
    feats = [f[:1] for f in fpn_feats()]
    losses = head.loss(feats, [sample])
    assert set(losses) == {'loss_maxproj', 'loss_avgproj', 'loss_cls'}

    kernel_preds, _, mask_feats, _ = head(feats)
    _, _, _, pos_indexes = SOLOV2Head._get_targets_single(
        head, gt, mask_feats.shape[-2:])
    per_level = []
    for lvl, gt_ind in ((0, 0), (2, 1)):
        kernels = kernel_preds[lvl][0].flatten(1)[:, pos_indexes[lvl]]
        logits = torch.einsum('cn,chw->nhw', kernels, mask_feats[0])
        target = torch.from_numpy(
            mmcv.imrescale(gt.masks.masks[gt_ind], 0.25)).expand_as(logits)
        per_level.append(MaxProjLoss()(logits, target))
    assert [len(pos_indexes[lvl]) for lvl in range(5)].count(0) == 3
    torch.testing.assert_close(losses['loss_maxproj'],
                               (per_level[0] + per_level[1]) / 2)


def test_positive_mask_logits_are_each_images_dynamic_conv_per_level():
    """One convolution per image with all its levels' kernels gives, per image, the logits of that image's
    features with each level's positive kernels, level after level; an image without positives gets none."""
    head = build_head()
    torch.manual_seed(2)
    kernel_preds = [torch.randn(3, 16, grid, grid) for grid in (12, 10, 8, 6, 4)]
    mask_feats = torch.randn(3, 16, 24, 20)
    pos_indexes = [[[0, 5, 143], [], [7], [], [1, 2]], [[]] * 5, [[], [99], [], [35, 0], []]]
    logits = head._positive_mask_logits(kernel_preds, mask_feats, pos_indexes)
    assert [tuple(img.shape) for img in logits] == [(6, 24, 20), (0, 24, 20), (3, 24, 20)]
    for img, img_inds in enumerate(pos_indexes):
        expected = torch.cat([
            torch.einsum('cn,chw->nhw', kernel_preds[lvl][img].flatten(1)[:, inds], mask_feats[img])
            for lvl, inds in enumerate(img_inds)])
        torch.testing.assert_close(logits[img], expected)


def test_mask_losses_are_each_levels_losses_over_the_whole_batch():
    """The mask losses run on each image's logits of all levels at once and are pooled per level; they must
    equal each loss computed on one level's positives of every image together (SOLOv2's per-level batch),
    averaged over the levels with positives."""
    head = build_head()
    samples = data_samples()
    outs = head(fpn_feats())
    gts, metas = [s.gt_instances for s in samples], [s.metainfo for s in samples]
    colour = torch.stack([s.color_similarity for s in samples])
    losses = head.loss_by_feat(*outs, batch_gt_instances=gts, batch_img_metas=metas, batch_color_similarity=colour)

    kernel_preds, _, mask_feats, _ = outs
    targets = [head._get_targets_single(gt, featmap_sizes=mask_feats.shape[-2:]) for gt in gts]
    expected = {'loss_maxproj': [], 'loss_avgproj': [], 'loss_pairwise': []}
    for lvl in range(5):
        logits, masks, img_inds = [], [], []
        for img, (mask_targets, _, _, pos_indexes, _) in enumerate(targets):
            inds = pos_indexes[lvl]
            logits.append(torch.einsum('cn,chw->nhw', kernel_preds[lvl][img].flatten(1)[:, inds], mask_feats[img]))
            masks.append(mask_targets[lvl])
            img_inds += [img] * len(inds)
        logits, masks = torch.cat(logits), torch.cat(masks)
        if len(logits):
            expected['loss_maxproj'].append(head.loss_mask_maxproj(logits, masks))
            expected['loss_avgproj'].append(head.loss_mask_avgproj(logits, masks))
            expected['loss_pairwise'].append(head.loss_mask_pairwise(logits, masks, colour, torch.tensor(img_inds)))
    assert len(expected['loss_maxproj']) >= 2  # several levels with positives: the pooling is tested
    for name, values in expected.items():
        torch.testing.assert_close(losses[name], torch.stack(values).mean(), rtol=1e-5, atol=1e-6)


def test_pairwise_needs_color_similarity():
    head = build_head()
    with pytest.raises(ValueError, match='color_similarity'):
        head.loss(fpn_feats(), data_samples(with_color=False))
    head = build_head(loss_mask_pairwise=None)
    losses = head.loss(fpn_feats(), data_samples(with_color=False))
    assert 'loss_pairwise' not in losses


@pytest.mark.parametrize('drop', ['missing', 'zeros'])
def test_loss_emb_is_zero_without_embeddings(drop):
    head = build_head()
    samples = data_samples(with_embs=drop == 'zeros')
    if drop == 'zeros':
        for sample in samples:
            sample.gt_instances.embs.zero_()
    loss_emb = head.loss(fpn_feats(), samples)['loss_emb']
    assert loss_emb.item() == 0 and loss_emb.requires_grad
    loss_emb.backward()
    assert torch.isfinite(head.conv_emb.weight.grad).all()


def count_positives(head: FreeSOLOHead, gt_instances: InstanceData) -> int:
    """Positive cells of an image per stock SOLOv2 assignment."""
    gt_instances = copy.deepcopy(gt_instances)
    gt_instances.masks = gt_instances.masks.pad((IMG, IMG))
    pos_indexes = SOLOV2Head._get_targets_single(
        head, gt_instances, (IMG // 4, IMG // 4))[3]
    return sum(len(inds) for inds in pos_indexes)


def test_loss_emb_equals_one_minus_cosine_by_hand():
    head = build_head(loss_emb_weight=0.5)
    pred = torch.zeros(128)
    pred[:3] = torch.tensor([1., 2., 2.])
    emb_a, emb_b = torch.zeros(128), torch.zeros(128)
    emb_a[:3] = torch.tensor([1., 0., 0.])  # cos = 1/3
    emb_b[1] = -4.  # cos = -2/3
    with torch.no_grad():
        head.conv_emb.weight.zero_()
        head.conv_emb.bias.copy_(pred)
    samples = data_samples()
    samples[0].gt_instances.embs[:] = emb_a
    samples[1].gt_instances.embs[:] = 0  # skipped
    loss_emb = head.loss(fpn_feats(), samples)['loss_emb']
    torch.testing.assert_close(loss_emb, torch.tensor(0.5 * (1 - 1 / 3)))

    samples[1].gt_instances.embs[:] = emb_b
    num_a, num_b = (count_positives(head, s.gt_instances) for s in samples)
    assert num_a > 0 and num_b > 0
    expected = 0.5 * (num_a * (1 - 1 / 3) + num_b * (1 + 2 / 3)) / (
        num_a + num_b)
    loss_emb = head.loss(fpn_feats(), samples)['loss_emb']
    torch.testing.assert_close(loss_emb, torch.tensor(expected))


def predict(head: torch.nn.Module, samples: list) -> list:
    head.eval()
    with torch.no_grad():
        return head.predict(fpn_feats(), samples)


def test_predict_matches_solov2_with_boxes_and_embeddings():
    head = build_head()
    with torch.no_grad():
        head.conv_cls.bias.zero_()  # scores around 0.5: many candidates
    samples = data_samples()
    results = predict(head, samples)

    stock_cfg = head_cfg(type='SOLOV2Head', num_classes=1)
    del stock_cfg['loss_mask_pairwise']
    stock = MODELS.build(stock_cfg)
    state = {k: v for k, v in head.state_dict().items() if 'emb' not in k}
    stock.load_state_dict(state)
    stock_results = predict(stock, samples)

    kernel_preds, cls_preds, mask_feats, emb_preds = head(fpn_feats())
    for img_id, (result, ref) in enumerate(zip(results, stock_results)):
        num = len(result)
        assert num > 1
        assert torch.equal(result.masks, ref.masks)
        assert torch.equal(result.scores, ref.scores)
        assert torch.equal(result.labels, ref.labels)
        assert torch.all(result.scores[:-1] >= result.scores[1:])
        assert torch.equal(result.bboxes, mask2bbox(result.masks))
        nonempty = result.masks.flatten(1).any(1)
        assert nonempty.any()
        boxes = result.bboxes[nonempty]
        assert torch.all(boxes[:, 2:] > boxes[:, :2])
        assert result.embs.shape == (num, 128)
        torch.testing.assert_close(result.embs.norm(dim=1), torch.ones(num))

        # each embedding is that of the cell whose kernel gave the mask
        cell_embs = F.normalize(
            torch.cat([e[img_id].flatten(1).t() for e in emb_preds]), dim=1)
        cell_kernels = torch.cat(
            [k[img_id].flatten(1).t() for k in kernel_preds])
        for emb, mask in zip(result.embs, result.masks):
            cell = (cell_embs - emb).abs().sum(1).argmin()
            # computed at the kept cells only (FreeSOLOHead.predict): equal up to float rounding
            torch.testing.assert_close(cell_embs[cell], emb, rtol=1e-5, atol=1e-6)
            probs = torch.einsum('c,chw->hw', cell_kernels[cell],
                                 mask_feats[img_id]).sigmoid()
            expected = F.interpolate(
                probs[None, None], size=(IMG, IMG), mode='bilinear') > 0.5
            assert torch.equal(mask, expected[0, 0])


def mirrored_views(head: FreeSOLOHead, second_cls_logit=None):
    """``_forward_towers`` of a batch of 2 that holds image 0 and its exact
    mirror image: every grid, the mask features and the category tower's
    features flipped left-right (the second view's category logits replaced
    by ``second_cls_logit`` if given), with the embedding conv made
    left-right symmetric so that it commutes with the flip too."""
    with torch.no_grad():
        head.conv_emb.weight.copy_(
            (head.conv_emb.weight + head.conv_emb.weight.flip(-1)) / 2)
        kernels, cls, mask_feats, cate = head._forward_towers(
            [feat[:1] for feat in fpn_feats()])

    def both(tensors, second=None):
        return [torch.cat([t, t.flip(-1) if second is None else
                           torch.full_like(t, second)]) for t in tensors]

    views = (both(kernels), both(cls, second_cls_logit),
             both([mask_feats])[0], both(cate))
    return (kernels, cls, mask_feats, cate), views


def test_flip_averaged_prediction_of_a_mirrored_view_is_the_views_own():
    """When the flipped input's outputs are exactly the image's mirrored,
    the average equals the image's own prediction: cell (r, c) is paired
    with (r, G - 1 - c) and the mirrored mask is flipped back (a wrong
    pairing or a missing flip averages two different masks)."""
    head = build_head()
    head.eval()
    with torch.no_grad():
        head.conv_cls.bias.zero_()  # scores around 0.5: many candidates
    (kernels, cls, mask_feats, cate), views = mirrored_views(head)
    samples = data_samples()[:1]
    metas = [sample.metainfo for sample in samples]
    with torch.no_grad():
        expected = head.predict_by_feat(kernels, cls, mask_feats, None,
                                        metas, mlvl_cate_feats=cate)[0]
        head._forward_towers = lambda x: views
        result = head.predict_flip_averaged(both_images(), samples)[0]
    assert len(expected) > 5
    assert torch.equal(result.masks, expected.masks)
    torch.testing.assert_close(result.scores, expected.scores)
    torch.testing.assert_close(result.embs, expected.embs)
    assert torch.equal(result.bboxes, expected.bboxes)


def test_flip_averaged_scores_are_the_mean_of_the_views():
    """A mirror view that sees nothing (category probability 0 everywhere)
    halves every cell's probability, and so every score; masks unchanged."""
    head = build_head()
    head.eval()
    with torch.no_grad():
        head.conv_cls.bias.fill_(1.0)
    (kernels, cls, mask_feats, cate), views = mirrored_views(
        head, second_cls_logit=-float('inf'))
    samples = data_samples()[:1]
    metas = [sample.metainfo for sample in samples]
    halved = [torch.logit(logits.sigmoid() / 2) for logits in cls]
    with torch.no_grad():
        expected = head.predict_by_feat(kernels, halved, mask_feats, None,
                                        metas, mlvl_cate_feats=cate)[0]
        plain = head.predict_by_feat(kernels, cls, mask_feats, None, metas,
                                     mlvl_cate_feats=cate)[0]
        head._forward_towers = lambda x: views
        result = head.predict_flip_averaged(both_images(), samples)[0]
    assert len(expected) > 5
    assert torch.equal(result.masks, expected.masks)
    torch.testing.assert_close(result.scores, expected.scores)
    torch.testing.assert_close(result.scores[0], plain.scores[0] / 2)  # the top mask is not decayed


def both_images() -> list:
    """Features of a batch of 2 (only their batch size is read)."""
    return [feat[:2] for feat in fpn_feats()]


def test_mirrored_points_pair_each_cell_with_its_mirror():
    head = build_head(num_grids=[3, 2, 2, 2, 1])
    assert head.mirrored_points(torch.device('cpu')).tolist() == [
        2, 1, 0, 5, 4, 3, 8, 7, 6,  # grid 3: columns reversed per row
        10, 9, 12, 11,  # grid 2, from 9
        14, 13, 16, 15,
        18, 17, 20, 19,
        21]  # grid 1: itself


def test_predict_empty():
    head = build_head(test_cfg=ConfigDict(TEST_CFG, score_thr=1.0))
    result = predict(head, data_samples())[0]
    assert result.masks.shape == (0, IMG, IMG)
    assert result.bboxes.shape == (0, 4)
    assert result.embs.shape == (0, 128)
    assert result.scores.shape == (0, )


def build_full_model() -> torch.nn.Module:
    """mmdet SOLOv2 with a random ResNet-18, FPN and a small FreeSOLO head."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(
            dict(
                type='SOLOv2',
                data_preprocessor=dict(
                    type='FreeSOLODataPreprocessor',
                    mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375],
                    bgr_to_rgb=True,
                    pad_mask=True,
                    pad_size_divisor=32),
                backbone=dict(
                    type='ResNet',
                    depth=18,
                    num_stages=4,
                    out_indices=(0, 1, 2, 3),
                    frozen_stages=1,
                    init_cfg=None,
                    style='pytorch'),
                neck=dict(
                    type='FPN',
                    in_channels=[64, 128, 256, 512],
                    out_channels=32,
                    start_level=0,
                    num_outs=5),
                mask_head=head_cfg(test_cfg=None),
                test_cfg=dict(TEST_CFG, score_thr=0.0)))


def test_full_solov2_model_loss_and_predict():
    model = build_full_model()
    packed = demo_mm_inputs(
        batch_size=2,
        image_shapes=[(3, 96, 128), (3, 128, 100)],
        num_items=[2, 1],
        num_classes=2,
        with_mask=True)
    for sample in packed['data_samples']:
        sample.gt_instances.labels[:] = 0
        sample.gt_instances.embs = torch.randn(len(sample.gt_instances), 128)
    data = model.data_preprocessor(packed, training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_maxproj', 'loss_avgproj', 'loss_pairwise',
                           'loss_cls', 'loss_emb'}
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, training=False)
        results = model(**data, mode='predict')
    for sample, result in zip(packed['data_samples'], results):
        pred = result.pred_instances
        assert pred.masks.shape[1:] == sample.ori_shape
        assert pred.embs.shape == (len(pred), 128)
        assert torch.equal(pred.bboxes, mask2bbox(pred.masks))


def test_flip_averaged_test_step_feeds_the_batch_and_its_mirror():
    from freesolo_mmdet.engine.pseudo_labels import flip_averaged_test_step
    model = build_full_model().eval()
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 96, 128), (3, 128, 100)], num_items=[2, 1],
                            num_classes=2, with_mask=True)
    seen = []
    extract_feat = model.extract_feat
    model.extract_feat = lambda inputs: seen.append(inputs) or extract_feat(inputs)
    with torch.no_grad():
        results = flip_averaged_test_step(model, packed)
        inputs = model.data_preprocessor(packed, False)['inputs']
    assert len(seen) == 1 and seen[0].shape[0] == 4  # one pass over both views
    assert torch.equal(seen[0][:2], inputs) and torch.equal(seen[0][2:], inputs.flip(-1))
    for sample, result in zip(packed['data_samples'], results):
        pred = result.pred_instances
        assert len(pred) > 0 and pred.masks.shape[1:] == sample.ori_shape
        assert torch.equal(pred.bboxes, mask2bbox(pred.masks))

    model.mask_head = torch.nn.Identity()  # any head without predict_flip_averaged
    with pytest.raises(TypeError, match='needs a FreeSOLOHead'):
        flip_averaged_test_step(model, packed)


def test_without_embedding_branch_and_with_solov2_loss_mask():
    with pytest.warns(UserWarning, match='ignores `loss_mask`'):
        head = build_head(
            with_emb=False, loss_mask=dict(type='DiceLoss', loss_weight=3.0))
    assert not hasattr(head, 'loss_mask') and not hasattr(head, 'conv_emb')
    losses = head.loss(fpn_feats(), data_samples())
    assert 'loss_emb' not in losses and 'loss_pairwise' in losses
    with torch.no_grad():
        head.conv_cls.bias.zero_()
    result = predict(head, data_samples())[0]
    assert len(result) > 0 and 'embs' not in result


def test_upsample_masks_one_at_a_time_equals_the_batched_resize():
    """The prediction's full-resolution masks are made one at a time (memory) and equal SOLOv2's batched
    resize-crop-resize-threshold bit for bit, on an odd original size and a padded input."""
    import torch.nn.functional as F
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 20, 24, generator=generator)
    upsampled, img_shape, ori_shape = (80, 96), (75, 90), (151, 183)
    batched = F.interpolate(probs[None], size=upsampled, mode='bilinear', align_corners=False)[..., :75, :90]
    batched = F.interpolate(batched, size=ori_shape, mode='bilinear', align_corners=False)[0] > 0.5
    masks = FreeSOLOHead.upsample_masks(probs, upsampled, img_shape, ori_shape, 0.5)
    assert masks.dtype == torch.bool and masks.shape == (7, 151, 183)
    assert torch.equal(masks, batched) and 0 < masks.sum() < masks.numel()
    assert FreeSOLOHead.upsample_masks(probs[:0], upsampled, img_shape, ori_shape, 0.5).shape == (0, 151, 183)


def test_tensor_masks_give_the_same_targets_and_losses_as_bitmap_masks():
    """TwoViewAugment leaves gt masks as bool tensors on the device: same targets and losses as BitmapMasks."""
    from freesolo_mmdet.models.dense_heads.freesolo_head import _TensorMasks
    head = build_head(num_classes=3)
    gt = square_instances([[40, 40, 70, 70], [42, 42, 68, 68], [0, 0, 8, 8]], [0, 1, 2])
    as_tensor = gt.clone()
    as_tensor.masks = _TensorMasks(torch.from_numpy(gt.masks.masks).bool())  # as FreeSOLOHead.loss wraps them
    featmap_sizes = (IMG // 4, IMG // 4)
    for subset in (slice(None), torch.zeros(0, dtype=torch.long)):
        expected = head._get_targets_single(gt[subset], featmap_sizes)
        got = head._get_targets_single(as_tensor[subset], featmap_sizes)
        for lvl in range(5):
            assert torch.equal(got[0][lvl], expected[0][lvl]) and torch.equal(got[1][lvl], expected[1][lvl])
            assert got[3][lvl] == expected[3][lvl] and torch.equal(got[4][lvl], expected[4][lvl])
    head = build_head()
    samples = data_samples()
    expected = head.loss(fpn_feats(), samples)
    for sample in samples:
        sample.gt_instances.masks = torch.from_numpy(sample.gt_instances.masks.masks).bool()
    got = head.loss(fpn_feats(), samples)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_targets_equal_solov2_on_many_random_instances():
    """30 random rectangles and ellipses of every scale (one empty mask) on a 128 image, with 3 labels:
    every output equals SOLOv2's joint assignment, and each positive's gt index names the gt whose
    rescaled mask it carries."""
    head = build_head(num_classes=3)
    rng = np.random.default_rng(0)
    masks = np.zeros((30, IMG, IMG), dtype=np.uint8)
    yy, xx = np.mgrid[:IMG, :IMG]
    for k, mask in enumerate(masks[1:]):
        cy, cx = rng.uniform(0, IMG, 2)
        ry, rx = rng.uniform(1, IMG / 2, 2)
        mask[((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 <= 1] = 1
        if k % 3 == 0:
            mask[int(cy):int(cy) + 6, :int(cx)] = 1
    boxes = []
    for mask in masks:
        ys, xs = mask.nonzero()
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(ys) else [5, 5, 40, 40])
    gt = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.tensor(rng.integers(0, 3, 30)),
                      masks=BitmapMasks(masks, IMG, IMG))
    featmap_sizes = (IMG // 4, IMG // 4)
    got = head._get_targets_single(gt, featmap_sizes)
    ref = SOLOV2Head._get_targets_single(head, gt, featmap_sizes)
    assert sum(len(inds) for inds in ref[3]) > 60  # enough positives over the levels to mean something
    for lvl in range(5):
        assert torch.equal(got[0][lvl], ref[0][lvl])
        assert torch.equal(got[1][lvl], ref[1][lvl])
        assert torch.equal(got[2][lvl], ref[2][lvl])
        assert got[3][lvl] == ref[3][lvl]
        assert 0 not in got[4][lvl].tolist()  # the empty mask has no positive
        for target, gt_ind in zip(got[0][lvl], got[4][lvl]):
            assert torch.equal(target[:IMG // 4, :IMG // 4],
                               torch.from_numpy(mmcv.imrescale(masks[gt_ind], 0.25)))
