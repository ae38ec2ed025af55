"""ClassAgnosticCocoMetric against raw pycocotools (useCats=0), hand-known
answers, and tools/make_class_agnostic_gt.py."""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from freesolo_mmdet.evaluation.class_agnostic_coco_metric import \
    ClassAgnosticCocoMetric

ROOT = Path(__file__).resolve().parents[1]
H, W = 120, 160
STATS = ('AP', 'AP50', 'AP75', 'AP_S', 'AP_M', 'AP_L', 'AR1', 'AR10', 'AR100',
         'AR_S', 'AR_M', 'AR_L')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name,
                                                  ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shape_mask(kind, x, y, w, h):
    """Rectangle or ellipse filling the box (x, y, w, h), clipped to image."""
    yy, xx = np.mgrid[:H, :W]
    if kind == 'rect':
        m = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
    else:
        m = (((xx + 0.5 - x - w / 2) / (w / 2))**2 +
             ((yy + 0.5 - y - h / 2) / (h / 2))**2) <= 1
    return m


def rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r['counts'] = r['counts'].decode()
    return r


def tight_xywh(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()),
            float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def gt_json(path, objects, categories=(3, 7, 11)):
    """objects: {img_id: [(mask, category_id, iscrowd), ...]}."""
    images, anns = [], []
    for img_id, objs in objects.items():
        images.append(dict(id=img_id, width=W, height=H, file_name=f'{img_id}.jpg'))
        for mask, cat, crowd in objs:
            r = rle(mask)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=cat,
                             iscrowd=crowd, segmentation=r,
                             area=float(mask_util.area(r)), bbox=tight_xywh(mask)))
    cats = [dict(id=c, name=f'c{c}') for c in categories]
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return str(path)


def sample(img_id, masks, scores, labels, boxes=None):
    """A data sample as a SOLOv2 test step leaves it (zero boxes)."""
    n = len(masks)
    masks = np.stack(masks) if n else np.zeros((0, H, W), bool)
    return dict(
        img_id=img_id, ori_shape=(H, W),
        pred_instances=dict(
            bboxes=torch.zeros(n, 4) if boxes is None else torch.tensor(boxes),
            scores=torch.tensor(scores, dtype=torch.float32),
            labels=torch.tensor(labels, dtype=torch.long),
            masks=torch.from_numpy(masks)))


def run(metric, samples, meta=('a', 'b', 'c')):
    metric.dataset_meta = dict(classes=meta)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def raw_cocoeval(gt_path, samples, iou_type):
    """Reference: pycocotools alone, useCats=0, boxes = tight mask boxes."""
    gt = COCO(gt_path)
    dets = []
    for s in samples:
        p = s['pred_instances']
        for m, sc in zip(p['masks'].numpy(), p['scores'].numpy()):
            # useCats=0 still drops detections of ids outside the GT's catIds
            det = dict(image_id=s['img_id'], category_id=11, score=float(sc))
            if iou_type == 'segm':
                det['segmentation'] = rle(m)
            else:
                det['bbox'] = tight_xywh(m)
            dets.append(det)
    ev = COCOeval(gt, gt.loadRes(dets), iou_type)
    ev.params.useCats = 0
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.fixture(scope='module')
def scene():
    """4 images, 3 categories (ids 3/7/11), small/medium/large objects and a
    crowd region; predictions: exact, shifted, resized, duplicate, missed and
    false positive masks with labels that never equal the GT's."""
    rng = np.random.default_rng(0)
    objects, samples = {}, []
    n_pred = 0
    for img_id in (1, 2, 5, 9):
        objs, preds = [], []
        for _ in range(5):
            kind = rng.choice(['rect', 'ellipse'])
            w, h = rng.choice([8, 14, 40, 60, 105], size=2)
            x, y = rng.integers(0, W - w), rng.integers(0, H - h)
            crowd = int(rng.random() < 0.1)
            objs.append((shape_mask(kind, x, y, w, h), int(rng.choice([3, 7, 11])), crowd))
            action = rng.choice(['exact', 'shift', 'resize', 'dup', 'miss'])
            if action in ('exact', 'dup'):
                preds.append(shape_mask(kind, x, y, w, h))
            if action in ('shift', 'dup'):
                dx, dy = rng.integers(-6, 7, size=2)
                preds.append(shape_mask(kind, x + dx, y + dy, w, h))
            if action == 'resize':
                preds.append(shape_mask(kind, x, y, w * 0.8, h * 1.1))
        x, y = rng.integers(0, 10, size=2)  # one large object, shifted
        objs.append((shape_mask('rect', x, y, 110, 100), 3, 0))
        preds.append(shape_mask('rect', x + rng.integers(0, 20), y, 110, 100))
        # small by mask area (~961 px), medium by box area (1224 px)
        objs.append((shape_mask('ellipse', 120, 60, 36, 34), 7, 0))
        preds.append(shape_mask('ellipse', 120 - rng.integers(0, 6), 60, 36, 34))
        for _ in range(2):  # false positives
            preds.append(shape_mask('rect', *rng.integers(0, 100, size=2), 15, 20))
        preds = [p for p in preds if p.any()]
        scores = (n_pred + rng.permutation(len(preds)) + 1) / 64.  # distinct
        n_pred += len(preds)
        objects[img_id] = objs
        samples.append(sample(img_id, preds, scores, rng.integers(1, 5, size=len(preds))))
    return objects, samples


def test_equals_raw_pycocotools_use_cats_0(scene, tmp_path):
    objects, samples = scene
    gt_path = gt_json(tmp_path / 'gt.json', objects)
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path), samples)
    assert len(res) == 24
    for iou_type in ('segm', 'bbox'):
        ref = raw_cocoeval(gt_path, samples, iou_type)
        assert all(r >= 0 for r in ref), 'scene must populate every stat'
        got = [res[f'agnostic/{iou_type}_{s}'] for s in STATS]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
        assert 0.2 < ref[0] < 0.9  # neither trivial nor empty
    # converted from data samples (no ann_file): the very same numbers
    for s, (img_id, objs) in zip(samples, objects.items()):
        s['instances'] = [
            dict(bbox=(np.array(tight_xywh(m)) + [0, 0, *tight_xywh(m)[:2]]).tolist(),
                 bbox_label=[3, 7, 11].index(c), mask=rle(m), ignore_flag=crowd)
            for m, c, crowd in objs
        ]
    res2 = run(ClassAgnosticCocoMetric(), samples)
    assert res2 == pytest.approx(res, abs=1e-12)


def test_equals_per_category_eval_of_one_category_json(scene, tmp_path):
    """useCats=0 on the original GT == usual per-category eval on the json
    written by tools/make_class_agnostic_gt.py."""
    objects, samples = scene
    gt_path = gt_json(tmp_path / 'gt.json', objects)
    out = tmp_path / 'agnostic.json'
    load_tool('make_class_agnostic_gt').main([gt_path, str(out)])
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path, metric='segm'), samples)
    gt = COCO(str(out))
    dets = [dict(image_id=s['img_id'], category_id=1, score=float(sc), segmentation=rle(m))
            for s in samples
            for m, sc in zip(s['pred_instances']['masks'].numpy(),
                             s['pred_instances']['scores'].numpy())]
    ev = COCOeval(gt, gt.loadRes(dets), 'segm')
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([res[f'agnostic/segm_{s}'] for s in STATS], ev.stats,
                               rtol=0, atol=1e-9)


def test_hand_known_answers(tmp_path):
    big = shape_mask('rect', 10, 5, 110, 100)  # large, category 3
    small = shape_mask('rect', 130, 20, 10, 25)  # 250 px, category 7
    gt_path = gt_json(tmp_path / 'gt.json', {1: [(big, 3, 0), (small, 7, 0)]})
    # perfect masks, wrong labels: everything is 1
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path),
              [sample(1, [big, small], [0.9, 0.8], [5, 0])])
    for t in ('segm', 'bbox'):
        for s in ('AP', 'AP50', 'AP75', 'AP_S', 'AP_L', 'AR100', 'AR_S', 'AR_L'):
            assert res[f'agnostic/{t}_{s}'] == pytest.approx(1.0, abs=1e-12), (t, s)
        assert res[f'agnostic/{t}_AR1'] == pytest.approx(0.5, abs=1e-12)
        assert res[f'agnostic/{t}_AP_M'] == -1  # no medium GT
    # IoU 0.72 with the small object only: matched at 0.50..0.70 of 0.50..0.95
    gt_path = gt_json(tmp_path / 'gt1.json', {1: [(small, 7, 0)]})
    part = shape_mask('rect', 130, 20, 10, 18)
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path), [sample(1, [part], [0.5], [2])])
    for t in ('segm', 'bbox'):
        got = {s: res[f'agnostic/{t}_{s}'] for s in ('AP', 'AP50', 'AP75', 'AR100')}
        assert got == pytest.approx(dict(AP=0.5, AP50=1.0, AP75=0.0, AR100=0.5), abs=1e-12)


def test_box_source_and_empty_predictions(tmp_path):
    m = shape_mask('rect', 10, 10, 30, 40)
    gt_path = gt_json(tmp_path / 'gt.json', {1: [(m, 3, 0)], 2: [(m, 7, 0)]})
    zero_boxes = [sample(1, [m], [0.9], [0]), sample(2, [], [], [])]
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path, bbox_from_masks=False), zero_boxes)
    assert res['agnostic/segm_AR100'] == pytest.approx(0.5)
    assert res['agnostic/bbox_AR100'] == 0  # the model's all-zero boxes
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path), zero_boxes)
    assert res['agnostic/bbox_AR100'] == pytest.approx(0.5)
    res = run(ClassAgnosticCocoMetric(ann_file=gt_path),
              [sample(1, [], [], []), sample(2, [], [], [])])
    assert res['agnostic/segm_AP'] == 0 and res['agnostic/bbox_AR100'] == 0


def test_format_only_and_bad_arguments(tmp_path):
    m = shape_mask('rect', 10, 10, 30, 40)
    gt_path = gt_json(tmp_path / 'gt.json', {1: [(m, 3, 0)]})
    metric = ClassAgnosticCocoMetric(ann_file=gt_path, format_only=True,
                                     outfile_prefix=str(tmp_path / 'res'))
    assert run(metric, [sample(1, [m], [0.9], [4])]) == {}
    dumped = json.loads((tmp_path / 'res.bbox.json').read_text())
    assert dumped[0]['bbox'] == tight_xywh(m)
    with pytest.raises(KeyError, match='segm'):
        ClassAgnosticCocoMetric(metric='proposal')
    with pytest.raises(ValueError, match='3 numbers'):
        ClassAgnosticCocoMetric(proposal_nums=(1, 100))
    with pytest.raises(FileNotFoundError):
        ClassAgnosticCocoMetric(ann_file=str(tmp_path / 'missing.json'))
    box_only = sample(1, [m], [0.9], [0], boxes=[[10., 10., 40., 50.]])
    del box_only['pred_instances']['masks']
    with pytest.raises(KeyError, match='needs predicted masks'):
        run(ClassAgnosticCocoMetric(ann_file=gt_path), [box_only])
    metric = ClassAgnosticCocoMetric()
    metric.process({}, [dict(sample(1, [m], [0.9], [0]), instances=[])])
    with pytest.raises(ValueError, match='dataset_meta'):
        metric.evaluate(1)


def test_make_class_agnostic_gt(tmp_path, capsys):
    tool = load_tool('make_class_agnostic_gt')
    m = shape_mask('rect', 10, 10, 30, 40)
    gt_path = gt_json(tmp_path / 'gt.json', {1: [(m, 3, 0), (m, 7, 1)], 4: [(m, 11, 0)], 6: []})
    out = tmp_path / 'out.json'
    tool.main([gt_path, str(out)])
    src, dst = json.loads(Path(gt_path).read_text()), json.loads(out.read_text())
    assert dst['categories'] == [dict(id=1, name='object', supercategory='object')]
    assert [a['category_id'] for a in dst['annotations']] == [1, 1, 1]
    assert [dict(a, category_id=0) for a in dst['annotations']] == \
        [dict(a, category_id=0) for a in src['annotations']]
    assert dst['images'] == src['images']
    assert '3 images, 3 annotations: 3 categories (3 used)' in capsys.readouterr().out
    (tmp_path / 'empty.json').write_text('')
    with pytest.raises(ValueError, match='not valid JSON'):
        tool.main([str(tmp_path / 'empty.json'), str(out)])
    (tmp_path / 'list.json').write_text('[]')
    with pytest.raises(ValueError, match='not a COCO instances json'):
        tool.main([str(tmp_path / 'list.json'), str(out)])
    with pytest.raises(FileNotFoundError):
        tool.main([str(tmp_path / 'nope.json'), str(out)])
