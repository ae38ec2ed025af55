"""End to end on a tiny synthetic set through the repository's tools: tools/train.py trains the MaskContrast
config with mmengine's Runner and resumes to the weights of an uninterrupted run; tools/test.py runs the
K-means and linear-probe metrics and draws the K-means pictures; a former-loop latest.pth loads, and is
refused for resume."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))
DEMO_CONFIG = osp.join(REPO, 'projects', 'maskcontrast', 'configs', 'maskcontrast_mbv2_fpn_demo.py')


def make_data(root, n=8, size=64):
    """Red squares ("coin") and blue discs ("cup") on grey noise; proposals = the exact masks.

    Returns:
        tuple: image folder and the COCO json (ground truth with ``kinds``, also usable as proposals).
    """
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'imgs'), exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(90, 150, (size, size, 3)).astype(np.uint8)
        y, x = rng.integers(4, size // 2 - 8, 2)
        square = np.zeros((size, size), bool)
        square[y:y + size // 4, x:x + size // 4] = True
        disc = np.zeros((size, size), np.uint8)
        centre = tuple(int(v) for v in rng.integers(size * 5 // 8, size * 7 // 8, 2))
        cv2.circle(disc, centre, size // 8, 1, -1)
        disc = disc.astype(bool) & ~square
        img[square] = (0, 0, 230)  # BGR red
        img[disc] = (230, 0, 0)  # BGR blue
        cv2.imwrite(osp.join(root, 'imgs', f'{i}.png'), img)
        images.append(dict(id=i + 1, file_name=f'{i}.png', height=size, width=size))
        for kind, mask in (('coin', square), ('cup', disc)):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle['counts'] = rle['counts'].decode('ascii')
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=1, segmentation=rle, score=0.9,
                             kind=kind, iscrowd=0))
    data = dict(images=images, annotations=anns, categories=[dict(id=1, name='object')], kinds=['coin', 'cup'])
    gt = osp.join(root, 'gt.json')
    with open(gt, 'w') as f:
        json.dump(data, f)
    return osp.join(root, 'imgs'), gt


TINY_CONFIG = """
_base_ = {base!r}
work_dir = {work_dir!r}
model = dict(
    backbone=dict(widen_factor=0.5, init_cfg=None),
    neck=dict(in_channels=[16, 48, 160], out_channels=16),
    head=dict(in_channels=16, feat_channels=16, embed_dims=8),
    momentum=0.9, memory_size=16)
train_dataloader = dict(batch_size={batch_size}, dataset=dict(img_dir={imgs!r}, proposal_file={gt!r},
                                                              transform=dict(crop_size=48)))
val = dict(type='SemanticSegDataset', img_dir={imgs!r}, ann_file={gt!r}, class_key='kind', split='val')
probe = dict(type='SemanticSegDataset', img_dir={imgs!r}, ann_file={gt!r}, class_key='kind', split='probe_train')
val_dataloader = dict(batch_size=4, dataset=val)
test_dataloader = dict(batch_size=4, dataset=dict(type='SplitConcatDataset', datasets=[val, probe]))
kmeans = dict(type='KMeansMIoU', num_samples=4000, seeds=(0, 1), iters=20, n_init=1)
val_evaluator = kmeans
test_evaluator = [kmeans, dict(type='LinearProbeMIoU', num_samples=4000, iters=100, lr=0.1)]
train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
param_scheduler = [dict(type='CosineAnnealingLR', T_max={max_iters}, eta_min_ratio=0.01, by_epoch=False, begin=0,
                        end={max_iters})]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=3))
log_processor = dict(window_size=1)
"""


def write_config(tmp_path, work_dir, max_iters=4, batch_size=4, **extra) -> str:
    imgs, gt = make_data(str(tmp_path / 'data'))
    text = TINY_CONFIG.format(base=DEMO_CONFIG, work_dir=str(work_dir), imgs=imgs, gt=gt, max_iters=max_iters,
                              batch_size=batch_size)
    text += ''.join(f'{key} = {value!r}\n' for key, value in extra.items())
    path = tmp_path / f'tiny_{osp.basename(str(work_dir))}.py'
    path.write_text(text)
    return str(path)


def run_tool(tool, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', tool), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'repo_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unique_names():
    name = f'mc_{time.monotonic_ns()}'
    return ['experiment_name=' + name, 'visualizer.name=' + name]


def test_train_resume_test_and_legacy_checkpoint(tmp_path):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    config = write_config(tmp_path, straight)
    proc = run_tool('train.py', config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # interrupted after 2 of 4 iterations (the schedule stays that of 4), then mmengine's resume
    proc = run_tool('train.py', config, '--work-dir', resumed, '--cfg-options', 'train_cfg.max_iters=2')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (resumed / 'iter_2.pth').is_file() and not (resumed / 'iter_4.pth').exists()
    proc = run_tool('train.py', config, '--work-dir', resumed, '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Advance dataloader 2 steps' in proc.stdout + proc.stderr

    a = torch.load(straight / 'iter_4.pth', map_location='cpu', weights_only=False)
    b = torch.load(resumed / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    assert a['state_dict'].keys() == b['state_dict'].keys()
    keys = list(a['state_dict'])
    assert any(k.startswith('key_encoder.module.') for k in keys) and 'key_encoder.steps' in keys
    assert {'memory.bank', 'memory.ptr', 'memory.count'} <= set(keys)
    for key, value in a['state_dict'].items():  # weights, EMA key encoder, memory bank
        assert torch.equal(value, b['state_dict'][key]), key
    assert int(a['state_dict']['key_encoder.steps']) == 1 + 4  # a copy at init, then one update per step
    assert int(a['state_dict']['memory.count']) > 0
    state = a['state_dict']
    assert not torch.equal(state['key_encoder.module.head.embed.weight'], state['head.embed.weight'])
    # the validation at the last iteration ran the K-means metric
    scalars = [json.loads(line) for line in open(next(straight.glob('*/vis_data/scalars.json')))]
    assert 0 <= scalars[-1]['kmeans/mIoU'] <= 100 and scalars[-1]['step'] == 4
    losses = [r['loss_contrast'] for r in scalars if 'loss_contrast' in r]
    assert len(losses) == 4 and all(np.isfinite(losses))

    # tools/test.py: both metrics, the K-means pictures through the visualiser
    test = load_tool('test')
    metrics = test.main([config, str(straight / 'iter_4.pth'), '--work-dir', str(tmp_path / 'test'), '--show-dir',
                         'kmeans', '--cfg-options', *unique_names()])
    assert set(metrics) >= {'kmeans/mIoU', 'kmeans/mIoU_std', 'kmeans/mIoU_per_seed', 'probe/mIoU'}
    assert len(metrics['kmeans/mIoU_per_seed']) == 2 and len(metrics['kmeans/IoU_per_class']) == 3
    assert 0 < metrics['probe/mIoU'] <= 100 and len(metrics['probe/IoU_per_class']) == 3
    pictures = sorted((tmp_path / 'test').glob('*/kmeans/*.png'))
    assert [p.name for p in pictures] == ['0.png', '1.png', '2.png', '3.png']  # show_num=4 val images
    # image | ground truth | K-means, titles above, legend below
    assert cv2.imread(str(pictures[0])).shape == (22 + 64 + 22, 3 * 64, 3)
    assert cv2.imread(str(next((tmp_path / 'test').glob('*/kmeans/overview.jpg')))).shape == (4 * 108, 192, 3)

    # projects/maskcontrast/tools/evaluate.py: several sources, also of the model at initialisation
    spec = importlib.util.spec_from_file_location(
        'maskcontrast_evaluate', osp.join(REPO, 'projects', 'maskcontrast', 'tools', 'evaluate.py'))
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    out = tmp_path / 'before.json'
    res = evaluate.main([config, '--checkpoint', 'none', '--sources', 'backbone.2', 'embedding', '--work-dir',
                         str(tmp_path / 'before'), '--out', str(out)])
    assert list(res['sources']) == ['backbone.2', 'embedding'] and json.load(open(out)) == res
    for source_metrics in res['sources'].values():
        assert 0 < source_metrics['kmeans/mIoU'] <= 100 and 0 < source_metrics['probe/mIoU'] <= 100
    assert res['sources']['backbone.2'] != res['sources']['embedding']

    # a checkpoint of the former loop (same state keys) loads through the converter: the same metrics
    legacy = tmp_path / 'latest.pth'
    torch.save(dict(state_dict=a['state_dict'], optimizer=a['optimizer'], scheduler=None, log=[dict(iter=4)],
                    meta=dict(iter=4, config='x.py', wall_s=1.0)), legacy)
    legacy_metrics = test.main([config, str(legacy), '--work-dir', str(tmp_path / 'test_legacy'), '--cfg-options',
                                *unique_names()])
    for key in ('kmeans/mIoU', 'kmeans/mIoU_per_seed', 'probe/mIoU'):
        assert legacy_metrics[key] == metrics[key], key
    # ... and is refused, with what to do instead, for resume
    from freesolo_mmdet.apis import InputError
    with pytest.raises(InputError, match='former MaskContrast loop.*load_from'):
        load_tool('train').main([config, '--work-dir', str(tmp_path / 'resume_legacy'), '--resume', str(legacy),
                                 '--cfg-options', *unique_names()])
