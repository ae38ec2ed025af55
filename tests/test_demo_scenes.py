"""Demo scene generator: exact masks from the paste records, COCO fields,
pycocotools and mmdet loading, determinism, drawing, bad input."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from freesolo_mmdet.datasets.demo_scenes import (KINDS, SceneConfig,
                                                 draw_instances, load_cutouts,
                                                 make_demo_dataset,
                                                 mask_to_annotation,
                                                 render_scene, visible_masks)

ROOT = Path(__file__).resolve().parents[1]
SIZE, NUM_TRAIN, NUM_VAL, SEED = 96, 3, 3, 7
ARGS = dict(num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE, seed=SEED,
            progress=False)


@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('demo')
    make_demo_dataset(str(out), **ARGS)
    return out


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_visible_masks_hand_example():
    footprints = np.zeros((3, 3, 4), bool)
    footprints[0, :, :3] = True  # bottom: columns 0-2
    footprints[1, 1:, 1:] = True  # middle: rows 1-2, columns 1-3
    footprints[2, 2, :2] = True  # top: row 2, columns 0-1
    expected = np.array([
        [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 1, 1]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]],
    ], bool)
    np.testing.assert_array_equal(visible_masks(footprints), expected)


def test_mask_to_annotation_hand_example():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:8] = True
    mask[6, 10] = True
    ann = mask_to_annotation(mask)
    assert ann['bbox'] == [3, 2, 8, 5]
    assert ann['area'] == 16
    np.testing.assert_array_equal(mask_utils.decode(ann['segmentation']),
                                  mask)
    with pytest.raises(ValueError, match='empty'):
        mask_to_annotation(np.zeros((4, 4), bool))


def test_masks_equal_masks_recomputed_from_paste_records(demo):
    cfg = SceneConfig(image_size=SIZE)
    cutouts = load_cutouts()
    coco = COCO(str(demo / 'annotations' / 'val.json'))
    for index in range(NUM_VAL):
        scene = render_scene(SEED, 'val', index, cfg)
        footprints = []
        for paste in scene.pastes:
            alpha = cutouts[paste.cutout_index].alpha.astype(np.uint8) * 255
            footprint = cv2.warpAffine(alpha, paste.matrix,
                                       (SIZE, SIZE)) >= 128
            np.testing.assert_array_equal(footprint, paste.footprint)
            footprints.append(footprint)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[index + 1]))
        assert len(anns) == len(footprints) >= cfg.min_objects
        covered = np.zeros((SIZE, SIZE), bool)
        for footprint, paste, ann in zip(footprints[::-1], scene.pastes[::-1],
                                         anns[::-1]):
            expected = footprint & ~covered
            covered |= footprint
            np.testing.assert_array_equal(coco.annToMask(ann), expected)
            assert ann['kind'] == paste.kind
            assert expected.sum() >= cfg.min_visible_fraction * footprint.sum()
            assert expected.sum() >= cfg.min_visible_pixels


@pytest.mark.parametrize('name', ['val.json', 'train_gt.json'])
def test_coco_fields(demo, name):
    content = load_json(demo / 'annotations' / name)
    assert content['categories'] == [{'id': 1, 'name': 'object'}]
    assert content['kinds'] == list(KINDS)
    assert len(content['images']) == (NUM_VAL if name == 'val.json' else
                                      NUM_TRAIN)
    coco = COCO(str(demo / 'annotations' / name))
    anns = content['annotations']
    assert len({a['id'] for a in anns}) == len(anns) > 0
    for ann in anns:
        mask = coco.annToMask(ann).astype(bool)
        rows, cols = np.nonzero(mask)
        assert ann['bbox'] == [
            cols.min(), rows.min(), cols.max() - cols.min() + 1,
            rows.max() - rows.min() + 1
        ]
        np.testing.assert_allclose(mask_utils.toBbox(ann['segmentation']),
                                   ann['bbox'])
        assert ann['area'] == mask.sum()
        assert (ann['category_id'], ann['iscrowd']) == (1, 0)
        assert ann['kind'] in KINDS
    for image in content['images']:
        split = 'val' if name == 'val.json' else 'train'
        pixels = cv2.imread(str(demo / split / image['file_name']))
        assert pixels.shape == (image['height'], image['width'], 3)


def test_train_json_is_unlabeled(demo):
    train = load_json(demo / 'annotations' / 'train.json')
    train_gt = load_json(demo / 'annotations' / 'train_gt.json')
    assert train['annotations'] == []
    assert train['images'] == train_gt['images']
    coco = COCO(str(demo / 'annotations' / 'train.json'))
    assert len(coco.imgs) == NUM_TRAIN


def test_mmdet_coco_dataset_loads(demo):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    dataset = CocoDataset(
        data_root=str(demo), ann_file='annotations/val.json',
        data_prefix=dict(img='val/'), metainfo=dict(classes=('object', )),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
        ])
    coco = COCO(str(demo / 'annotations' / 'val.json'))
    assert len(dataset) == NUM_VAL
    sample = dataset[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert sample['img'].shape == (SIZE, SIZE, 3)
    assert len(sample['gt_bboxes']) == len(anns)
    assert (sample['gt_bboxes_labels'] == 0).all()
    np.testing.assert_array_equal(sample['gt_masks'].masks,
                                  [coco.annToMask(a) for a in anns])
    x, y, w, h = anns[0]['bbox']
    np.testing.assert_allclose(sample['gt_bboxes'].tensor[0].numpy(),
                               [x, y, x + w, y + h])


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    make_demo_dataset(str(tmp_path / 'again'), **ARGS)
    for name in ('train.json', 'train_gt.json', 'val.json'):
        assert (tmp_path / 'again' / 'annotations' / name).read_bytes() == (
            demo / 'annotations' / name).read_bytes()
    assert (tmp_path / 'again' / 'val' / '000001.jpg').read_bytes() == (
        demo / 'val' / '000001.jpg').read_bytes()
    make_demo_dataset(str(tmp_path / 'other'), **dict(ARGS, seed=SEED + 1))
    assert (tmp_path / 'other' / 'annotations' / 'val.json').read_bytes() != (
        demo / 'annotations' / 'val.json').read_bytes()


def test_preview_written(demo):
    preview = cv2.imread(str(demo / 'preview.png'))
    assert preview.shape == (SIZE, 4 * SIZE, 3)  # 3 val images, 1 row of 4


def test_draw_instances():
    image = np.full((20, 20, 3), 100, np.uint8)
    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 12:18, 12:18] = True
    drawn = draw_instances(image, masks, alpha=0.5)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 100).all()  # input untouched
    assert (drawn[0, 0] == 100).all() and (drawn[11, 11] == 100).all()
    outline, inside = drawn[2, 5], drawn[5, 5]  # mask 0: edge and interior
    np.testing.assert_allclose(inside, (100 + outline.astype(float)) / 2,
                               atol=1)
    assert not (drawn[5, 5] == drawn[15, 15]).all()  # distinct colours
    with_scores = draw_instances(image, masks, scores=[0.9, 0.5])
    assert (with_scores != draw_instances(image, masks)).any()
    with pytest.raises(ValueError, match='masks must be'):
        draw_instances(image, masks[:, :10])
    with pytest.raises(ValueError, match='image must be'):
        draw_instances(image.astype(np.float32), masks)
    with pytest.raises(ValueError, match='scores'):
        draw_instances(image, masks, scores=[0.9])


def test_bad_arguments(tmp_path):
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    with pytest.raises(NotADirectoryError, match='not a directory'):
        make_demo_dataset(str(a_file), **ARGS)
    with pytest.raises(ValueError, match='num_train'):
        make_demo_dataset(str(tmp_path / 'x'), num_train=-1)
    with pytest.raises(ValueError, match='min_objects'):
        SceneConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match='image_size'):
        SceneConfig(image_size=8)


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', ROOT / 'tools' / 'make_demo_data.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    with pytest.raises(SystemExit, match='not a directory'):
        tool.main(['--out', str(a_file)])
    out = tmp_path / 'demo'
    tool.main(['--out', str(out), '--num-train', '1', '--num-val', '1',
               '--size', '64', '--no-progress'])
    printed = capsys.readouterr().out
    assert 'train: 1 images' in printed and 'MiB on disk' in printed
    assert (out / 'train' / '000000.jpg').is_file()
    assert load_json(out / 'annotations' / 'val.json')['images'][0][
        'width'] == 64
