"""MaskContrast model shapes and unit norm, proposals, datasets and two-view geometry."""
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

from projects.maskcontrast.maskcontrast import (MaskProposalDataset, MaskProposals, SemanticSegDataset,  # noqa: E402
                                                TwoViewTransform, collate_two_views, resize_labels)

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


def test_model_forward_shapes_unit_norm_and_training_step():
    torch.manual_seed(0)
    model = MODELS.build(TINY_MODEL)
    model.init_weights()
    img = torch.rand(2, 3, 64, 64) * 255
    emb, logits = model.embed(img)
    assert emb.shape == (2, 8, 8, 8) and logits.shape == (2, 1, 8, 8)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, 8, 8), atol=1e-5)
    assert model(img).shape == (2, 8, 8, 8)
    assert [tuple(f.shape[1:2]) for f in model.backbone_features(img)] == [(16, ), (48, ), (160, )]

    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 8:32, 8:32] = 1
    labels[:, 40:60, 30:60] = 2
    model.train()
    losses = model.loss(img, labels, img.flip(-1), labels.flip(-1))
    assert set(losses) == {'loss_contrast', 'loss_mask'}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert model.key_encoder is not None and int(model.memory.count) == 4  # 2 images x 2 masks
    sum(losses.values()).backward()
    assert model.head.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.key_encoder.parameters())
    key_weight = model.key_encoder.module['head'].embed.weight
    for _ in range(2):  # from the first update on: key = 0.9 key + 0.1 query
        before = key_weight.clone()
        with torch.no_grad():
            model.head.embed.weight.copy_(before + 1.0)
        model.momentum_update()
        assert torch.allclose(key_weight, before + 0.1, atol=1e-6)


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
    assert item['img1'].shape == (3, 24, 24) and item['label2'].shape == (24, 24)
    batch = collate_two_views([item, ds[0]])
    assert batch['img1'].shape == (2, 3, 24, 24) and batch['label1'].dtype == torch.long


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
    with pytest.raises(ValueError, match='no mask proposals'):
        MaskProposals(path, min_score=0.95)
    img_dir2, path2, _, _ = write_scene_json(tmp_path / 'x' if (tmp_path / 'x').mkdir() is None else None,
                                             with_kinds=False)
    with pytest.raises(ValueError, match='kinds'):
        SemanticSegDataset(img_dir2, path2, class_key='kind')


def test_semantic_gt_from_kinds(tmp_path):
    img_dir, path, a, b = write_scene_json(tmp_path)
    ds = SemanticSegDataset(img_dir, path, class_key='kind', scale=16)
    assert ds.classes == ['background', 'coin', 'cup'] and ds.num_classes == 3
    item = ds[0]
    assert item['img'].shape == (3, 16, 16) and item['label'].shape == (32, 32)  # labels keep full size
    assert ((item['label'] == 2).numpy() == (a & ~b)).all() and ((item['label'] == 1).numpy() == b).all()
    ds = SemanticSegDataset(img_dir, path, class_key='category_id')
    assert ds.classes == ['background', 'object']


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
