"""The one-command pipeline, end to end on a tiny demo set: outputs, metrics, resume, bad input."""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from freesolo_mmdet.datasets.demo_scenes import make_demo_dataset

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
import freesolo_pipeline  # noqa: E402


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('pipeline')
    make_demo_dataset(str(root / 'data'), num_train=6, num_val=3, image_size=96, progress=False)
    argv = ['--images', str(root / 'data' / 'train'), '--work-dir', str(root / 'w'),
            '--val-images', str(root / 'data' / 'val'), '--val-ann', str(root / 'data' / 'annotations' / 'val.json'),
            '--iters', '2']
    table = freesolo_pipeline.main(argv)
    return root, argv, table


def test_masks_for_every_image_and_overlays(demo):
    root, _, _ = demo
    masks = COCO(str(root / 'w' / 'masks.json'))
    names = sorted(os.listdir(root / 'data' / 'train'))
    assert sorted(im['file_name'] for im in masks.dataset['images']) == names
    assert sorted(os.listdir(root / 'w' / 'overlays')) == names
    for ann in masks.dataset['annotations']:
        assert len(ann['emb']) == 128
        assert ann['area'] == int(masks.annToMask(ann).sum())


def test_metrics_table_equals_pycocotools(demo):
    root, _, table = demo
    assert list(table) == ['Free Masks', 'round 1'] or list(table) == ['Free Masks', 'round 1', 'round 2']
    with open(root / 'w' / 'metrics.json') as f:
        assert json.load(f) == table
    gt = COCO(str(root / 'data' / 'annotations' / 'val.json'))
    with open(root / 'w' / 'val' / 'free_masks.json') as f:
        free_masks = json.load(f)['annotations']
    detections = gt.loadRes([dict(image_id=a['image_id'], category_id=1, segmentation=a['segmentation'],
                                  score=a['score']) for a in free_masks])
    evaluation = COCOeval(gt, detections, 'segm')
    evaluation.params.useCats = 0
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    np.testing.assert_allclose(table['Free Masks']['segm'], evaluation.stats, atol=1e-12)
    assert (root / 'w' / 'metrics.md').read_text().count('\n') == 2 + len(table)


def test_rerun_resumes_without_redoing_a_stage(demo, capsys):
    root, argv, table = demo
    checkpoint = open(root / 'w' / 'round1' / 'final_checkpoint').read().strip()
    mtime = os.stat(checkpoint).st_mtime_ns
    assert freesolo_pipeline.main(argv) == table
    out = capsys.readouterr().out
    assert '+ tools/' not in out  # no tool was run again
    assert out.count('done already') >= 4
    assert os.stat(checkpoint).st_mtime_ns == mtime


@pytest.mark.parametrize('bad, message', [
    (['--images', '/no/such/folder', '--work-dir', 'w'], 'no such folder'),
    (['--images', '.', '--work-dir', 'w', '--val-ann', 'x.json'], 'go together'),
])
def test_bad_arguments_are_refused(bad, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        freesolo_pipeline.main(bad)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
