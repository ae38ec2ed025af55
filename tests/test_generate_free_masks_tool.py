"""COCO writer and tools/generate_free_masks.py: output format, bad images, resume, distributed."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from freesolo_mmdet.apis import InputError
from freesolo_mmdet.datasets.image_list import build_inference_model
from mmdet.registry import MODELS
from freesolo_mmdet.free_mask.coco_writer import masks_to_coco_annotations, merge_coco_parts

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location('generate_free_masks', REPO / 'tools' / 'generate_free_masks.py')
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)

# random-init ResNet-18 at thumbnail size, filters off so that every image gets masks
TINY_CONFIG = f"""
_base_ = {str(REPO / 'configs' / 'free_mask' / 'free_mask_r50_densecl.py')!r}
model = dict(backbone=dict(depth=18, init_cfg=None), sky_filter=None, width_filter=None, min_score=None, top_k=4)
test_pipeline = [
    dict(type='LoadAnyImageFromFile'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
free_mask_cfg = dict(batch_size=2, num_workers=0, chunk_size=2)
"""
GOOD = ['a.jpg', 'b.png', 'c.jpg', 'd.jpg', 'sub/e.jpg']


@pytest.fixture
def workspace(tmp_path):
    """Config and a folder of 5 images (one in a subfolder), a truncated jpg, a text file named .jpg and one
    named .txt (listed too: every file is read or reported)."""
    rng = np.random.default_rng(0)
    images = tmp_path / 'images'
    (images / 'sub').mkdir(parents=True)
    for name in GOOD:
        h, w = rng.integers(50, 100, 2)
        img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.circle(img, (w // 2, h // 2), int(min(h, w)) // 4, [int(v) for v in rng.integers(0, 255, 3)], -1)
        cv2.imwrite(str(images / name), img)
    jpg = (images / 'a.jpg').read_bytes()
    (images / 'truncated.jpg').write_bytes(jpg[:len(jpg) // 2])
    (images / 'text.jpg').write_text('not an image')
    (images / 'notes.txt').write_text('not an image')
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    return tmp_path


def run_tool(workspace, out, *extra):
    tool.main([str(workspace / 'tiny.py'), '--images', str(workspace / 'images'), '--out', str(out), *extra])


def test_masks_to_coco_annotations():
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:8] = True
    masks[2, 9, 11] = True  # masks[1] is empty: skipped
    anns = masks_to_coco_annotations(masks, [0.91234567, 0.5, 0.75], image_id=7, embs=np.eye(3)[:, :2] / 3,
                                     start_id=10)
    assert [a['id'] for a in anns] == [10, 11]
    assert anns[0]['bbox'] == [3.0, 2.0, 5.0, 3.0] and anns[0]['area'] == 15  # tight XYWH
    assert anns[1]['bbox'] == [11.0, 9.0, 1.0, 1.0] and anns[1]['area'] == 1
    assert anns[0]['score'] == 0.912346 and anns[0]['emb'] == [0.333333, 0.0] and anns[1]['emb'] == [0.0, 0.0]
    assert all(a['image_id'] == 7 and a['category_id'] == 1 and a['iscrowd'] == 0 for a in anns)
    assert np.array_equal(mask_util.decode(anns[0]['segmentation']), masks[0])
    assert 'emb' not in masks_to_coco_annotations(masks[:1], [1.0], image_id=1)[0]
    json.dumps(anns)  # json-ready
    with pytest.raises(ValueError, match='3 masks but 2 scores'):
        masks_to_coco_annotations(masks, [1.0, 1.0], image_id=1)


def test_merge_renumbers_and_rejects_duplicate_images(tmp_path):
    part = dict(images=[dict(id=5, file_name='x.jpg', height=4, width=4)],
                annotations=[dict(id=1, image_id=5), dict(id=1, image_id=5)])
    other = dict(images=[dict(id=6, file_name='y.jpg', height=4, width=4)], annotations=[dict(id=1, image_id=6)])
    for name, content in (('p0.json', part), ('p1.json', other)):
        (tmp_path / name).write_text(json.dumps(content))
    counts = merge_coco_parts([tmp_path / 'p0.json', tmp_path / 'p1.json'], tmp_path / 'm.json')
    merged = json.loads((tmp_path / 'm.json').read_text())
    assert counts == dict(num_images=2, num_annotations=3)
    assert [a['id'] for a in merged['annotations']] == [1, 2, 3]
    assert merged['categories'] == [dict(id=1, name='object', supercategory='object')]
    with pytest.raises(ValueError, match='image id 5 occurs twice'):
        merge_coco_parts([tmp_path / 'p0.json', tmp_path / 'p0.json'], tmp_path / 'bad.json')
    assert not (tmp_path / 'bad.json').exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        'm.json', 'p0.json', 'p1.json']  # no temporary left behind


def test_folder_to_coco_json(workspace, capsys):
    out = workspace / 'out' / 'free_masks.json'
    run_tool(workspace, out)
    assert "8/8" in capsys.readouterr().out  # progress bar
    coco = COCO(str(out))
    assert sorted(img['file_name'] for img in coco.dataset['images']) == sorted(GOOD)
    for img in coco.dataset['images']:
        h, w = cv2.imread(str(workspace / 'images' / img['file_name'])).shape[:2]
        assert (img['height'], img['width']) == (h, w)
    anns = coco.dataset['annotations']
    assert [a['id'] for a in anns] == list(range(1, len(anns) + 1))
    assert {a['image_id'] for a in anns} == set(coco.getImgIds())
    for ann in anns:
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann['area'] == mask.sum() > 0 and ann['iscrowd'] == 0 and ann['category_id'] == 1
        assert len(ann['emb']) == 128 and 0 < ann['score'] <= 1
    report = json.loads((workspace / 'out' / 'free_masks.report.json').read_text())
    assert report['num_images'] == 8 and report['num_images_with_masks'] == 5 and report['no_mask'] == []
    reasons = {item['file_name']: item['reason'] for item in report['skipped']}
    assert 'truncated' in reasons['truncated.jpg'] and 'cannot identify image' in reasons['text.jpg']
    assert sorted(reasons) == ['notes.txt', 'text.jpg', 'truncated.jpg']
    assert not (workspace / 'out' / 'free_masks.json.parts').exists()

    from mmdet.datasets import CocoDataset
    dataset = CocoDataset(ann_file=str(out), data_prefix=dict(img=str(workspace / 'images')),
                          metainfo=dict(classes=('object', )), pipeline=[])
    info = dataset.get_data_info(0)
    x, y, w, h = coco.loadAnns(coco.getAnnIds(imgIds=info['img_id']))[0]['bbox']
    assert len(dataset) == 5 and info['instances'][0]['bbox'] == [x, y, x + w, y + h]


def test_resume_is_byte_identical(workspace):
    full, resumed = workspace / 'full.json', workspace / 'resumed.json'
    run_tool(workspace, full, '--keep-parts')
    run_tool(workspace, resumed, '--max-chunks', '2')  # 8 images, 2 per chunk: 4 chunks
    parts = workspace / 'resumed.json.parts'
    assert not resumed.exists() and sorted(p.name for p in parts.iterdir()) == [
        'chunk000000.json', 'chunk000001.json', 'meta.json']
    with pytest.raises(SystemExit, match='other settings'):
        run_tool(workspace, resumed, '--chunk-size', '3')
    finished = os.stat(parts / 'chunk000001.json').st_mtime_ns
    run_tool(workspace, resumed, '--keep-parts')
    assert os.stat(parts / 'chunk000001.json').st_mtime_ns == finished  # not recomputed
    assert resumed.read_bytes() == full.read_bytes()
    assert (workspace / 'resumed.report.json').read_text().replace('resumed', 'full') == \
        (workspace / 'full.report.json').read_text()


def test_checkpoint_option(workspace):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    init_default_scope('mmdet')
    set_random_seed(0)  # the weights the tool initialises with --seed 0
    model = build_inference_model(Config.fromfile(str(workspace / 'tiny.py')), None, 'cpu')
    torch.save(dict(state_dict=model.state_dict()), workspace / 'weights.pth')
    run_tool(workspace, workspace / 'seed0.json')
    run_tool(workspace, workspace / 'loaded.json', '--seed', '5', '--checkpoint', str(workspace / 'weights.pth'))
    assert (workspace / 'loaded.json').read_bytes() == (workspace / 'seed0.json').read_bytes()
    torch.save(dict(state_dict={}), workspace / 'empty.pth')
    with pytest.raises(KeyError, match='lacks'):
        run_tool(workspace, workspace / 'x.json', '--checkpoint', str(workspace / 'empty.pth'))


def test_paper_config_uses_densecl_r50():
    import mmpretrain
    import yaml
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(REPO / 'configs' / 'free_mask' / 'free_mask_r50_densecl.py'))
    metafile = Path(mmpretrain.__file__).parent / '.mim' / 'configs' / 'densecl' / 'metafile.yml'
    weights = {m['Name']: m['Weights'] for m in yaml.safe_load(metafile.read_text())['Models']}
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint=weights['densecl_resnet50_8xb32-coslr-200e_in1k'], prefix='backbone.')
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)  # built, not initialised: no download
    import torch
    feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert feats[model.feature_level].shape == (1, 2048, 2, 2)


def test_images_without_masks_are_reported(workspace):
    out = workspace / 'none.json'
    run_tool(workspace, out, '--cfg-options', 'model.min_score=1.01')
    assert json.loads(out.read_text())['images'] == []
    report = json.loads((workspace / 'none.report.json').read_text())
    assert sorted(report['no_mask']) == sorted(GOOD) and report['num_annotations'] == 0


def test_ann_file_input_keeps_image_ids(workspace):
    ann_file = workspace / 'list.json'
    ann_file.write_text(json.dumps(dict(images=[dict(id=42, file_name='b.png'), dict(id=7, file_name='sub/e.jpg')])))
    out = workspace / 'from_list.json'
    tool.main([str(workspace / 'tiny.py'), '--ann-file', str(ann_file), '--img-prefix', str(workspace / 'images'),
               '--out', str(out)])
    assert [img['id'] for img in json.loads(out.read_text())['images']] == [42, 7]


def test_bad_input_gives_clear_errors(workspace):
    with pytest.raises(FileNotFoundError, match='no such folder'):
        run_tool(workspace, workspace / 'x.json', '--images', str(workspace / 'missing'))
    (workspace / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no file in'):
        tool.main([str(workspace / 'tiny.py'), '--images', str(workspace / 'empty'), '--out', 'x.json'])
    with pytest.raises(InputError, match='no such config'):
        tool.main([str(workspace / 'nope.py'), '--images', str(workspace / 'images'), '--out', 'x.json'])
    (workspace / 'broken.json').write_text('{"images": [{"id": 1}]}')
    with pytest.raises(ValueError, match='not a COCO json'):
        tool.main([str(workspace / 'tiny.py'), '--ann-file', str(workspace / 'broken.json'), '--img-prefix',
                   str(workspace), '--out', 'x.json'])
    with pytest.raises(SystemExit):  # argparse: --ann-file without --img-prefix
        tool.main([str(workspace / 'tiny.py'), '--ann-file', str(workspace / 'broken.json'), '--out', 'x.json'])


def test_two_processes_with_torchrun_match_one(workspace):
    """tools/dist_generate_free_masks.sh, 2 CPU processes over gloo: same bytes as one process."""
    single, dist = workspace / 'single.json', workspace / 'dist.json'
    run_tool(workspace, single)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(29500 + os.getpid() % 1000))
    proc = subprocess.run(['bash', str(REPO / 'tools' / 'dist_generate_free_masks.sh'), '2',
                           str(workspace / 'tiny.py'), '--images', str(workspace / 'images'), '--out', str(dist)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dist.read_bytes() == single.read_bytes()
