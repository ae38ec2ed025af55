"""Tests of CoarseMaskCocoDataset and the score/emb loading and packing."""
import json

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import LoadImageFromFile
from mmengine.registry import DefaultScope
from pycocotools import mask as mask_utils

from freesolo_mmdet.datasets.coarse_mask_dataset import CoarseMaskCocoDataset
from freesolo_mmdet.datasets.transforms.coarse_mask_annotations import (
    LoadCoarseMaskAnnotations, PackCoarseMaskInputs)

EMB_DIM = 4
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCoarseMaskAnnotations'),
    dict(type='PackCoarseMaskInputs'),
]


def rle(x1: int, y1: int, x2: int, y2: int, h: int = 32, w: int = 48) -> dict:
    """COCO RLE (json-ready) of a filled box."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    encoded['counts'] = encoded['counts'].decode()
    return encoded


def annotation(ann_id: int, box: tuple, **extra) -> dict:
    x1, y1, x2, y2 = box
    return dict(id=ann_id, image_id=1, category_id=1, iscrowd=0,
                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                segmentation=rle(*box), **extra)


def write_dataset(tmp_path, annotations: list, categories=None) -> str:
    """Two 32x48 images; image 2 has no annotation."""
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name), np.full((32, 48, 3), 7, np.uint8))
    ann_file = tmp_path / 'coarse.json'
    ann_file.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='a.png', height=32, width=48),
                dict(id=2, file_name='b.png', height=32, width=48)],
        annotations=annotations,
        categories=categories or [dict(id=1, name='object')])))
    return str(ann_file)


def build(ann_file: str, tmp_path, **kwargs) -> CoarseMaskCocoDataset:
    kwargs.setdefault('filter_cfg', dict(filter_empty_gt=True, min_size=0))
    with DefaultScope.overwrite_default_scope('mmdet'):
        return CoarseMaskCocoDataset(
            ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
            pipeline=PIPELINE, emb_dim=EMB_DIM, **kwargs)


def test_scores_and_embs_reach_gt_instances(tmp_path):
    ann_file = write_dataset(tmp_path, [
        annotation(1, (2, 3, 12, 20), score=0.75, emb=[1, 2, 3, 4]),
        annotation(2, (5, 5, 5, 9), score=0.5, emb=[9, 9, 9, 9]),  # w < 1
        annotation(3, (20, 4, 40, 30)),  # no score, no emb
        annotation(4, (0, 0, 8, 8), score=0.25, emb=[0, 1, 0, 0]),
    ])
    dataset = build(ann_file, tmp_path)
    assert len(dataset) == 1  # image 2 has no mask: filtered for training
    assert dataset.metainfo['classes'] == ('object', )

    gt = dataset[0]['data_samples'].gt_instances
    torch.testing.assert_close(gt.scores, torch.tensor([0.75, 1.0, 0.25]))
    assert gt.scores.dtype == torch.float32
    torch.testing.assert_close(
        gt.embs, torch.tensor([[1., 2, 3, 4], [0, 0, 0, 0], [0, 1, 0, 0]]))
    assert gt.labels.tolist() == [0, 0, 0]
    assert gt.masks.masks.shape == (3, 32, 48)
    assert gt.masks.masks[0].sum() == 10 * 17
    torch.testing.assert_close(gt.bboxes.tensor[1],
                               torch.tensor([20., 4, 40, 30]))

    test_set = build(ann_file, tmp_path, test_mode=True)
    assert len(test_set) == 2
    empty = test_set[1]['data_samples'].gt_instances
    assert empty.scores.shape == (0, ) and empty.embs.shape == (0, EMB_DIM)


def test_crowd_annotations_go_to_ignored_instances(tmp_path):
    ann_file = write_dataset(tmp_path, [
        annotation(1, (2, 3, 12, 20), score=0.75),
        dict(annotation(2, (20, 4, 40, 30), score=0.5), iscrowd=1),
    ])
    sample = build(ann_file, tmp_path)[0]['data_samples']
    assert sample.gt_instances.scores.tolist() == [0.75]
    assert sample.ignored_instances.scores.tolist() == [0.5]
    assert sample.ignored_instances.embs.shape == (1, EMB_DIM)


def test_bad_annotation_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        build(str(tmp_path / 'missing.json'), tmp_path)
    (tmp_path / 'empty.json').write_text('')
    with pytest.raises(ValueError, match='empty'):
        build(str(tmp_path / 'empty.json'), tmp_path)
    (tmp_path / 'not_coco.json').write_text('{}')
    with pytest.raises(ValueError, match="missing 'categories'"):
        build(str(tmp_path / 'not_coco.json'), tmp_path)
    (tmp_path / 'no_images.json').write_text(
        '{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ValueError, match='no images'):
        build(str(tmp_path / 'no_images.json'), tmp_path)
    other = write_dataset(tmp_path, [annotation(1, (2, 3, 12, 20))],
                          categories=[dict(id=1, name='person')])
    with pytest.raises(ValueError, match='no category'):
        build(other, tmp_path)
    no_masks = write_dataset(tmp_path, [])
    with pytest.raises(ValueError, match='filtered out'):
        build(no_masks, tmp_path)
    bad_emb = write_dataset(tmp_path,
                            [annotation(7, (2, 3, 12, 20), emb=[1, 2, 3])])
    with pytest.raises(ValueError, match='annotation 7'):
        build(bad_emb, tmp_path)


def test_packing_detects_dropped_instances(tmp_path):
    ann_file = write_dataset(tmp_path, [annotation(1, (2, 3, 12, 20)),
                                        annotation(2, (20, 4, 40, 30))])
    dataset = CoarseMaskCocoDataset(
        ann_file=ann_file, data_prefix=dict(img=str(tmp_path)),
        emb_dim=EMB_DIM)
    results = LoadImageFromFile()(dataset.get_data_info(0))
    results = LoadCoarseMaskAnnotations()(results)
    results['gt_ignore_flags'] = results['gt_ignore_flags'][:1]
    results['gt_bboxes'] = results['gt_bboxes'][:1]
    with pytest.raises(ValueError, match='gt_scores has 2 rows'):
        PackCoarseMaskInputs()(results)
