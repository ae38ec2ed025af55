"""Pseudo labels: selection, COCO output, the test-pipeline lookup and tools/gen_pseudo_labels.py."""
import copy
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData
from pycocotools.coco import COCO

from freesolo_mmdet.apis import InputError
from freesolo_mmdet.engine.pseudo_labels import (collect_pseudo_label_coco, find_test_pipeline,
                                                 predict_pseudo_labels, select_pseudo_labels)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from test_self_training_hook import EMB, NUM_IMAGES, TEST_PIPELINE, TINY_MODEL, write_scenes

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location('gen_pseudo_labels', REPO / 'tools' / 'gen_pseudo_labels.py')
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)

H, W = 10, 20
PACK = [dict(type='LoadImageFromFile'),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape'))]


def box_masks(boxes: list) -> torch.Tensor:
    """(n, H, W) bool masks filling the x1y1x2y2 boxes."""
    masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes):
        mask[y1:y2, x1:x2] = True
    return masks


def predictions(boxes: list, scores: list) -> InstanceData:
    return InstanceData(masks=box_masks(boxes), scores=torch.tensor(scores),
                        embs=torch.arange(len(boxes) * 2, dtype=torch.float).view(-1, 2) / 10)


def test_select_threshold_width_and_top_n():
    # box widths 20 (> 0.95 W = 19: dropped), 19 (kept), 3, 5, 4, 2
    pred = predictions([[0, 0, 20, 5], [1, 0, 20, 5], [0, 0, 3, 3], [5, 5, 10, 9], [10, 1, 14, 9], [0, 0, 2, 2]],
                       [0.99, 0.5, 0.3, 0.29, 0.8, 0.7])
    kept = select_pseudo_labels(pred, score_thr=0.3, max_per_img=3, max_width=0.95)
    assert kept.scores.tolist() == pytest.approx([0.8, 0.7, 0.5])  # 0.99 too wide, 0.29 below, 0.3 4th
    assert torch.equal(kept.masks, pred.masks[[4, 5, 1]]) and torch.equal(kept.embs, pred.embs[[4, 5, 1]])
    assert select_pseudo_labels(pred, score_thr=0.3, max_per_img=20, max_width=0.9).scores.tolist() == \
        pytest.approx([0.8, 0.7, 0.3])  # 19 > 0.9 W = 18: the 0.5 mask goes too
    assert select_pseudo_labels(pred, score_thr=0.3, max_per_img=20, max_width=None).scores.tolist() == \
        pytest.approx([0.99, 0.8, 0.7, 0.5, 0.3])
    assert len(select_pseudo_labels(pred[:0])) == 0


class FixedPredictor(torch.nn.Module):
    """Stands in for a detector: returns the given predictions by ``img_id``."""

    def __init__(self, preds: dict) -> None:
        super().__init__()
        self.preds = preds
        self.calls = []

    def test_step(self, data: dict) -> list:
        self.calls.append(self.training)
        return [DetDataSample(pred_instances=self.preds[sample.img_id]) for sample in data['data_samples']]


@pytest.fixture
def images(tmp_path) -> list:
    """Images 1-3 are H x W pngs; 4 is not an image."""
    for name in ('a.png', 'b.png', 'c.png'):
        cv2.imwrite(str(tmp_path / name), np.zeros((H, W, 3), np.uint8))
    (tmp_path / 'd.png').write_text('not an image')
    names = ['a.png', 'b.png', 'c.png', 'd.png']
    return [dict(id=i, file_name=name, path=str(tmp_path / name)) for i, name in enumerate(names, 1)]


def test_predictions_to_coco(images):
    model = FixedPredictor({
        1: predictions([[2, 1, 7, 4], [0, 0, 20, 10], [10, 5, 12, 9]], [0.9, 0.95, 0.1]),
        2: predictions([[1, 1, 3, 3]], [0.2]),  # below the threshold: no mask kept
        3: predictions([[4, 2, 9, 10], [0, 0, 1, 1]], [0.4, 0.6]),
    }).train()
    entries = predict_pseudo_labels(model, images, PACK, score_thr=0.3, max_per_img=20, max_width=0.95, batch_size=2)
    assert model.calls == [False, False] and model.training  # eval for prediction, then restored
    # two "ranks" gathered in any order give the same file as one
    coco, report = collect_pseudo_label_coco(entries[1::2] + entries[::2])
    assert (coco, report) == collect_pseudo_label_coco(entries)
    assert coco['categories'] == [dict(id=1, name='object', supercategory='object')]
    assert coco['images'] == [dict(id=1, file_name='a.png', height=H, width=W),
                              dict(id=3, file_name='c.png', height=H, width=W)]
    assert [(a['id'], a['image_id'], a['bbox'], a['area'], a['score'], a['iscrowd']) for a in coco['annotations']] == [
        (1, 1, [2, 1, 5, 3], 15, 0.9, 0),  # image 1: the full-width mask and the 0.1 one are dropped
        (2, 3, [0, 0, 1, 1], 1, 0.6, 0),  # image 3: sorted by score
        (3, 3, [4, 2, 5, 8], 40, 0.4, 0)]
    assert [a['emb'] for a in coco['annotations']] == [[0.0, 0.1], [0.2, 0.3], [0.0, 0.1]]
    decoded = mask_util.decode(coco['annotations'][0]['segmentation'])
    assert np.array_equal(decoded, box_masks([[2, 1, 7, 4]])[0].numpy())
    assert report['num_images'] == 4 and report['num_images_with_masks'] == 2 and report['num_annotations'] == 3
    assert report['no_mask'] == ['b.png'] and report['num_no_mask'] == 1
    assert report['num_skipped'] == 1 and report['skipped'][0]['file_name'] == 'd.png'
    with pytest.raises(ValueError, match='occurs twice'):
        collect_pseudo_label_coco(entries + entries[:1])


def test_find_test_pipeline():
    test, val, top = [dict(type='T')], [dict(type='V')], [dict(type='P')]
    assert find_test_pipeline(Config(dict(test_dataloader=dict(dataset=dict(pipeline=test)),
                                          val_dataloader=dict(dataset=dict(pipeline=val))))) == test
    assert find_test_pipeline(Config(dict(val_dataloader=dict(dataset=dict(dataset=dict(pipeline=val))),
                                          test_pipeline=top))) == val
    assert find_test_pipeline(Config(dict(test_dataloader=None, test_pipeline=top))) == top
    with pytest.raises(KeyError, match='no test pipeline'):
        find_test_pipeline(Config(dict(model=dict())))


def test_tool_writes_coco_json_and_report(tmp_path, capsys):
    root = write_scenes(tmp_path)
    (tmp_path / 'config.py').write_text(f'model = {TINY_MODEL!r}\ntest_pipeline = {TEST_PIPELINE!r}\n')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY_MODEL))
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'model.pth')
    out = tmp_path / 'round1.json'
    args = [str(tmp_path / 'config.py'), str(tmp_path / 'model.pth'), '--ann-file', str(root / 'coarse.json'),
            '--img-prefix', str(root / 'images'), '--out', str(out), '--max-per-img', '2', '--num-workers', '0']
    report = tool.main(args)
    assert f'{out}: {2 * NUM_IMAGES} masks on {NUM_IMAGES} of {NUM_IMAGES} images' in capsys.readouterr().out
    assert json.loads((tmp_path / 'round1.report.json').read_text()) == dict(out='round1.json', **report)
    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == list(range(1, NUM_IMAGES + 1))  # the --ann-file's ids
    assert coco.imgs[1]['file_name'] == '0.png'
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert len(ann['emb']) == EMB and ann['score'] >= 0.3
        assert ann['bbox'] == list(mask_util.toBbox(ann['segmentation'])) and ann['bbox'][2] <= 0.95 * 64
    assert len(coco.getAnnIds()) == 2 * NUM_IMAGES
    # --flip: the masks average each image and its mirror image; same format, other masks
    flipped = tmp_path / 'flipped.json'
    tool.main(args[:-5] + [str(flipped)] + args[-4:] + ['--flip'])
    flipped = COCO(str(flipped))
    assert set(flipped.getImgIds()) <= set(coco.getImgIds()) and 0 < len(flipped.getAnnIds()) <= 2 * NUM_IMAGES
    assert all(len(ann['emb']) == EMB for ann in flipped.loadAnns(flipped.getAnnIds()))
    counts = {ann['segmentation']['counts'] for ann in coco.loadAnns(coco.getAnnIds())}
    assert {ann['segmentation']['counts'] for ann in flipped.loadAnns(flipped.getAnnIds())} != counts

    with pytest.raises(InputError, match='no such checkpoint'):
        tool.main(args[:1] + [str(tmp_path / 'missing.pth')] + args[2:])
    with pytest.raises(SystemExit):  # argparse: --ann-file without --img-prefix
        tool.main(args[:2] + ['--ann-file', str(root / 'coarse.json'), '--out', str(out)])
    # no mask kept: OUT is rewritten empty (not left stale) and the tool fails, before training would
    with pytest.raises(InputError, match=r'holds no label: no mask of the model reached --score-thr 1\.01'):
        tool.main(args + ['--score-thr', '1.01'])
    assert json.loads(out.read_text())['images'] == []


def test_refined_predictions_follow_the_colour_edge(tmp_path):
    """refine_iters: a blocky predicted mask around a red disc becomes the disc (GrabCut on the image, recovered
    from the test pipeline's half-size input and resized back); off, the mask is written as predicted."""
    from test_free_mask_refine import disc_scene, iou
    image, disc, coarse = disc_scene()
    cv2.imwrite(str(tmp_path / 'disc.png'), image[..., ::-1])
    images = [dict(id=1, file_name='disc.png', path=str(tmp_path / 'disc.png'))]
    pipeline = [PACK[0], dict(type='Resize', scale_factor=0.5, keep_ratio=True), PACK[1]]
    pred = InstanceData(masks=torch.from_numpy(coarse)[None], scores=torch.tensor([0.9]))
    masks = {}
    for refine_iters in (None, 3):
        entries = predict_pseudo_labels(FixedPredictor({1: pred.clone()}), images, pipeline,
                                        refine_iters=refine_iters)
        (annotation, ) = entries[0]['annotations']
        masks[refine_iters] = mask_util.decode(annotation['segmentation']).astype(bool)
        ys, xs = np.nonzero(masks[refine_iters])
        assert annotation['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert annotation['score'] == pytest.approx(0.9)
    assert np.array_equal(masks[None], coarse)
    assert iou(coarse, disc) < 0.35 and iou(masks[3], disc) > 0.9
