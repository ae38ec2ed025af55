"""MaskContrast model (mmengine modes, key encoder), proposals, datasets and two-view geometry."""
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402

from projects.maskcontrast.maskcontrast import (MaskProposalDataset, MaskProposals, SemanticSegDataset,  # noqa: E402
                                                SplitConcatDataset, TwoViewTransform, resize_labels)

TINY_MODEL = dict(
    type='MaskContrast',
    backbone=dict(type='MobileNetV2', widen_factor=0.5, out_indices=(2, 4, 6), frozen_stages=1, norm_eval=True),
    neck=dict(type='FPN', in_channels=[16, 48, 160], out_channels=16, num_outs=3),
    head=dict(type='MaskContrastHead', in_channels=16, feat_channels=16, embed_dims=8, num_levels=3),
    momentum=0.9,
    memory_size=16,
    loss_stride=4)


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r['counts'] = r['counts'].decode('ascii')
    return r


def two_view_batch():
    """Two 64 px images, two proposals each; view 2 is the horizontal flip of view 1."""
    img = torch.rand(2, 3, 64, 64) * 255
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 8:32, 8:32] = 1
    labels[:, 40:60, 30:60] = 2
    return torch.stack([img, img.flip(-1)], 1), dict(proposals=torch.stack([labels, labels.flip(-1)], 1))


def test_model_modes_shapes_unit_norm_and_training_step():
    torch.manual_seed(0)
    model = MODELS.build(TINY_MODEL)
    model.init_weights()
    model.eval()  # as mmengine's test loop: BN statistics, not those of the batch
    img = torch.rand(2, 3, 64, 64) * 255
    emb, logits = model.embed(img)
    assert emb.shape == (2, 8, 8, 8) and logits.shape == (2, 1, 8, 8)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, 8, 8), atol=1e-5)
    assert model(img, mode='tensor').shape == (2, 8, 8, 8)
    assert [tuple(f.shape[1:2]) for f in model.backbone_features(img)] == [(16, ), (48, ), (160, )]

    # predict: per-pixel unit features of the configured source, images of different sizes one by one
    samples = model.test_step(dict(inputs=[img[0], img[1, :, :48, :32]], data_samples=[DetDataSample(),
                                                                                       DetDataSample()]))
    assert samples[0].pred_feats.data.shape == (8, 8, 8) and samples[1].pred_feats.data.shape == (8, 6, 4)
    assert torch.allclose(samples[0].pred_feats.data, emb[0], atol=1e-5)
    for source, channels in (('backbone.2', 160), ('backbone.cat', 16 + 48 + 160)):
        model.test_cfg['feature_source'] = source
        feat = model.test_step(dict(inputs=[img[0]], data_samples=[DetDataSample()]))[0].pred_feats.data
        assert feat.shape[0] == channels and torch.allclose(feat.norm(dim=0), torch.ones(feat.shape[1:]), atol=1e-4)
    with pytest.raises(ValueError, match='unknown feature source'):
        MODELS.build(dict(TINY_MODEL, test_cfg=dict(feature_source='neck')))

    # loss: one training step through mmengine's train_step
    inputs, data_samples = two_view_batch()
    model.train()
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    log_vars = model.train_step(dict(inputs=inputs, data_samples=data_samples), optim)
    assert set(log_vars) == {'loss', 'loss_contrast', 'loss_mask'}
    assert all(np.isfinite(float(v)) for v in log_vars.values())
    assert int(model.memory.count) == 4  # 2 images x 2 masks, each present in both views
    assert all(p.grad is None and not p.requires_grad for p in model.key_encoder.parameters())
    with pytest.raises(ValueError, match=r'\(B, 2, 3, S, S\) views'):
        model(inputs[:, 0], data_samples, mode='loss')


def test_key_encoder_copies_the_initialised_query_then_follows_it(tmp_path):
    # a pretrained backbone file: init_weights loads it into the query, and the key encoder must follow
    donor = MODELS.build(TINY_MODEL['backbone'])
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(1.0)
    path = tmp_path / 'backbone.pth'
    torch.save(donor.state_dict(), path)
    pretrained = dict(type='Pretrained', checkpoint=str(path))
    cfg = dict(TINY_MODEL, backbone=dict(TINY_MODEL['backbone'], init_cfg=pretrained))
    model = MODELS.build(cfg)
    model.init_weights()
    donor_weight = donor.conv1.conv.weight
    assert torch.equal(model.backbone.conv1.conv.weight, donor_weight)
    assert torch.equal(model.key_encoder.module['backbone'].conv1.conv.weight, donor_weight)
    for name, value in model.encoder_modules().state_dict().items():
        assert torch.equal(model.key_encoder.module.state_dict()[name], value), name

    key_weight = model.key_encoder.module['head'].embed.weight
    for _ in range(2):  # MoCo: key = 0.9 key + 0.1 query at each step
        before = key_weight.clone()
        with torch.no_grad():
            model.head.embed.weight.copy_(before + 1.0)
        model.momentum_update()
        assert torch.allclose(key_weight, before + 0.1, atol=1e-6)
    # the loss updates the key encoder first (the update after the previous optimizer step)
    before = key_weight.clone()
    with torch.no_grad():
        model.head.embed.weight.copy_(before + 1.0)
    model.train()
    model(*two_view_batch(), mode='loss')
    assert torch.allclose(key_weight, before + 0.1, atol=1e-6)

    missing = dict(TINY_MODEL, backbone=dict(
        TINY_MODEL['backbone'], init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'no.pth'))))
    with pytest.raises(FileNotFoundError, match='convert_deepsort_mobilenetv2'):
        MODELS.build(missing).init_weights()


def test_resize_labels_area_vote():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 1
    labels[0, 4:, 4:] = 2
    labels[0, 0, 7] = 3  # 1 pixel of 16 in its cell: outvoted
    out = resize_labels(labels, (2, 2), num_masks=3)
    assert out.tolist() == [[[1, 0], [0, 2]]]


def write_scene_json(tmp_path, with_kinds=True):
    """Two 32x32 images; image 1 has overlapping proposals (scores 0.9 / 0.5)."""
    img_dir = tmp_path / 'imgs'
    img_dir.mkdir()
    a = np.zeros((32, 32), bool)
    a[4:20, 4:20] = True
    b = np.zeros((32, 32), bool)
    b[10:30, 10:30] = True
    images = [dict(id=1, file_name='a.jpg', height=32, width=32), dict(id=2, file_name='b.jpg', height=32, width=32)]
    for info in images:
        cv2.imwrite(str(img_dir / info['file_name']), np.full((32, 32, 3), 128, np.uint8))
    anns = [dict(id=1, image_id=1, category_id=1, segmentation=rle(a), score=0.5, kind='cup', iscrowd=0),
            dict(id=2, image_id=1, category_id=1, segmentation=rle(b), score=0.9, kind='coin', iscrowd=0),
            dict(id=3, image_id=2, category_id=1, segmentation=rle(b), score=0.1, kind='coin', iscrowd=0)]
    data = dict(images=images, annotations=anns, categories=[dict(id=1, name='object')])
    if with_kinds:
        data['kinds'] = ['coin', 'cup']
    path = tmp_path / 'masks.json'
    path.write_text(json.dumps(data))
    return str(img_dir), str(path), a, b


def test_proposals_overlap_and_filters(tmp_path):
    img_dir, path, a, b = write_scene_json(tmp_path)
    props = MaskProposals(path, min_score=0.2)
    assert props.image_ids() == [1]  # image 2's only proposal is below min_score
    label = props.label_map(1)
    assert (label == 1).sum() == b.sum()  # the 0.9 proposal is first and wins the overlap
    assert ((label == 2) == (a & ~b)).all()
    ds = MaskProposalDataset(img_dir, path, min_score=0.2, transform=dict(crop_size=24))
    item = ds[0]
    assert item['inputs'].shape == (2, 3, 24, 24) and item['data_samples']['proposals'].shape == (2, 24, 24)
    batch = default_collate([item, ds[0]])
    assert batch['inputs'].shape == (2, 2, 3, 24, 24) and batch['data_samples']['proposals'].dtype == torch.long


def test_clear_errors_on_bad_input(tmp_path):
    img_dir, path, _, _ = write_scene_json(tmp_path)
    with pytest.raises(FileNotFoundError, match='mask proposal file not found'):
        MaskProposals(str(tmp_path / 'missing.json'))
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        MaskProposalDataset(str(tmp_path / 'nope'), path)
    results_style = tmp_path / 'results.json'
    results_style.write_text(json.dumps(json.load(open(path))['annotations']))
    with pytest.raises(ValueError, match='image_file'):
        MaskProposals(str(results_style))
    assert MaskProposals(str(results_style), image_file=path).image_ids() == [1, 2]
    with pytest.raises(ValueError, match='no usable mask proposals'):
        MaskProposals(path, min_score=0.95)
    img_dir2, path2, _, _ = write_scene_json(tmp_path / 'x' if (tmp_path / 'x').mkdir() is None else None,
                                             with_kinds=False)
    with pytest.raises(ValueError, match='kinds'):
        SemanticSegDataset(img_dir2, path2, class_key='kind')


def test_semantic_gt_from_kinds(tmp_path):
    img_dir, path, a, b = write_scene_json(tmp_path)
    ds = SemanticSegDataset(img_dir, path, class_key='kind', scale=16)
    assert ds.classes == ['background', 'coin', 'cup'] and ds.num_classes == 3
    assert ds.metainfo == dict(classes=('background', 'coin', 'cup'))
    item = ds[1]
    sample = item['data_samples']
    label = sample.gt_sem_seg.sem_seg[0]
    assert item['inputs'].shape == (3, 16, 16) and label.shape == (32, 32)  # labels keep full size
    assert sample.img_shape == (16, 16) and sample.ori_shape == (32, 32) and sample.sample_idx == 1
    assert sample.split == 'val' and sample.img_path.endswith('b.jpg')
    assert (ds[0]['data_samples'].gt_sem_seg.sem_seg[0].numpy() == 2 * (a & ~b) + b).all()
    ds = SemanticSegDataset(img_dir, path, class_key='category_id')
    assert ds.classes == ['background', 'object']
    # the val images then the probe's: split tags and per-part sample_idx kept
    both = SplitConcatDataset([dict(type='SemanticSegDataset', img_dir=img_dir, ann_file=path, split='val'),
                               dict(type='SemanticSegDataset', img_dir=img_dir, ann_file=path, split='probe_train',
                                    max_images=1)])
    assert len(both) == 3 and both.metainfo == dict(classes=('background', 'coin', 'cup'))
    assert [(both[i]['data_samples'].split, both[i]['data_samples'].sample_idx) for i in range(3)] == \
        [('val', 0), ('val', 1), ('probe_train', 0)]
    with pytest.raises(IndexError):
        both[3]
    with pytest.raises(ValueError, match='disagree on their classes'):
        SplitConcatDataset([dict(type='SemanticSegDataset', img_dir=img_dir, ann_file=path),
                            dict(type='SemanticSegDataset', img_dir=img_dir, ann_file=path, class_key='category_id')])


def test_two_views_keep_masks_on_their_pixels():
    # the proposal is the red square: in every view the label must cover exactly the red pixels
    img = np.zeros((64, 64, 3), np.uint8)
    label = np.zeros((64, 64), np.uint8)
    img[16:48, 20:44] = (255, 0, 0)
    label[16:48, 20:44] = 1
    tf = TwoViewTransform(crop_size=32, jitter_prob=0, gray_prob=0, min_fg_fraction=0.1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        v1, l1, v2, l2 = tf(rng, img, label)
        for view, lab in ((v1, l1), (v2, l2)):
            # pixels untouched by interpolation are pure red / pure black: they must agree exactly
            # (a flip or crop applied to only one of image and label breaks this)
            pure_red, pure_black = view[..., 0] > 250, view[..., 0] < 5
            assert pure_red.sum() > 0.5 * (lab == 1).sum()
            assert (lab[pure_red] == 1).all() and (lab[pure_black] == 0).all()
            assert lab.any()  # min_fg_fraction keeps some of the proposal


@pytest.mark.parametrize('name', ['maskcontrast_mbv2_fpn_demo.py', 'maskcontrast_r50_fpn_coco.py'])
def test_configs_are_standard_mmengine_configs(name):
    from freesolo_mmdet.apis import load_config
    root = osp.abspath(osp.join(osp.dirname(__file__), '..'))
    cfg = load_config(osp.join(root, 'projects', 'maskcontrast', 'configs', name),
                      {'model.test_cfg.feature_source': 'backbone.2'})  # the README's override is a known key
    assert cfg.model.test_cfg.feature_source == 'backbone.2'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == cfg.param_scheduler[0].end
    assert cfg.train_dataloader.sampler.type == 'InfiniteSampler'
    assert cfg.train_dataloader.collate_fn.type == 'default_collate'
    assert cfg.test_dataloader.collate_fn.type == 'pseudo_collate'
    assert [m.type for m in cfg.test_evaluator] == ['KMeansMIoU', 'LinearProbeMIoU']
    assert cfg.val_evaluator.type == 'KMeansMIoU' and cfg.default_hooks.visualization.type == 'KMeansVisualizationHook'
    assert cfg.visualizer.type == 'SemSegLocalVisualizer' and dict(type='LegacyCheckpointHook') in cfg.custom_hooks
    assert cfg.default_hooks.checkpoint.by_epoch is False and cfg.log_processor.by_epoch is False
    model = MODELS.build(cfg.model)  # no init_weights: no downloads
    assert model.test_cfg['feature_source'] == 'backbone.2'
    if 'coco' in name:
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 64
        assert cfg.model.backbone.norm_cfg.type == 'SyncBN' and cfg.model.momentum == 0.999
