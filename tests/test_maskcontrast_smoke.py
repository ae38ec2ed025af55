"""End to end on a tiny synthetic set: tools/train.py for a few steps, then tools/evaluate.py."""
import importlib.util
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))
sys.path.insert(0, ROOT)
TOOLS = osp.join(ROOT, 'projects', 'maskcontrast', 'tools')


def load_tool(name):
    sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location(f'maskcontrast_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(root, n=8, size=64):
    """Red squares ("coin") and blue discs ("cup") on grey noise; proposals = the exact masks."""
    rng = np.random.default_rng(0)
    (root / 'imgs').mkdir()
    images, anns = [], []
    for i in range(n):
        img = rng.integers(90, 150, (size, size, 3)).astype(np.uint8)
        y, x = rng.integers(4, 24, 2)
        square = np.zeros((size, size), bool)
        square[y:y + 16, x:x + 16] = True
        disc = np.zeros((size, size), np.uint8)
        cv2.circle(disc, (int(rng.integers(40, 56)), int(rng.integers(40, 56))), 8, 1, -1)
        disc = disc.astype(bool) & ~square
        img[square] = (0, 0, 230)  # BGR red
        img[disc] = (230, 0, 0)  # BGR blue
        cv2.imwrite(str(root / 'imgs' / f'{i}.png'), img)
        images.append(dict(id=i + 1, file_name=f'{i}.png', height=size, width=size))
        for kind, mask in (('coin', square), ('cup', disc)):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle['counts'] = rle['counts'].decode('ascii')
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=1, segmentation=rle, score=0.9,
                             kind=kind, iscrowd=0))
    data = dict(images=images, annotations=anns, categories=[dict(id=1, name='object')], kinds=['coin', 'cup'])
    (root / 'gt.json').write_text(json.dumps(data))
    return str(root / 'imgs'), str(root / 'gt.json')


CONFIG = """
default_scope = 'mmdet'
custom_imports = dict(imports=['projects.maskcontrast.maskcontrast'], allow_failed_imports=False)
model = dict(
    type='MaskContrast',
    backbone=dict(type='MobileNetV2', widen_factor=0.5, out_indices=(2, 4, 6), frozen_stages=1, norm_eval=True),
    neck=dict(type='FPN', in_channels=[16, 48, 160], out_channels=16, num_outs=3),
    head=dict(type='MaskContrastHead', in_channels=16, feat_channels=16, embed_dims=8, num_levels=3),
    momentum=0.9, memory_size=16, loss_stride=4)
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    type='MaskProposalDataset', img_dir={imgs!r}, proposal_file={gt!r}, transform=dict(crop_size=48)))
train_cfg = dict(max_iters=3, log_interval=1, seed=0)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
param_scheduler = dict(type='CosineAnnealingLR', eta_min_ratio=0.01)
eval_cfg = dict(
    val_dataset=dict(type='SemanticSegDataset', img_dir={imgs!r}, ann_file={gt!r}, class_key='kind'),
    probe_dataset=dict(type='SemanticSegDataset', img_dir={imgs!r}, ann_file={gt!r}, class_key='kind'),
    kmeans=dict(num_samples=4000, seeds=(0, ), iters=20, n_init=1),
    probe=dict(iters=150, batch_size=4, lr=0.1))
"""


def test_train_then_evaluate(tmp_path):
    imgs, gt = make_data(tmp_path)
    cfg_path = tmp_path / 'tiny_cfg.py'
    cfg_path.write_text(CONFIG.format(imgs=imgs, gt=gt))
    work = tmp_path / 'work'
    train = load_tool('train')
    train.main([str(cfg_path), '--work-dir', str(work), '--no-progress'])
    log = json.load(open(work / 'train_log.json'))
    assert log['iters'] == 3 and len(log['log']) == 3
    assert all(np.isfinite(e['loss_contrast']) and np.isfinite(e['loss_mask']) for e in log['log'])
    assert log['log'][-1]['lr'] == pytest.approx(1e-5, rel=1e-3)  # cosine to eta_min_ratio * lr

    evaluate = load_tool('evaluate')
    out = tmp_path / 'eval.json'
    res = evaluate.main([str(cfg_path), '--checkpoint', str(work / 'latest.pth'), '--sources', 'model',
                         'backbone.cat', '--out', str(out), '--show-dir', str(tmp_path / 'show'), '--show-num', '2'])
    # image | ground truth | model K-means | backbone.cat K-means, titles above, legend below
    for name in ('0.png', '1.png'):
        assert cv2.imread(str(tmp_path / 'show' / name)).shape == (22 + 64 + 22, 4 * 64, 3)
    assert cv2.imread(str(tmp_path / 'show' / 'overview.jpg')).shape == (2 * (22 + 64 + 22), 4 * 64, 3)
    assert json.load(open(out))['classes'] == ['background', 'coin', 'cup']
    for source in ('model', 'backbone.cat'):
        km, probe = res['sources'][source]['kmeans'], res['sources'][source]['probe']
        assert 0 <= km['miou'] <= 1 and len(km['ious']) == 3 and 0 <= probe['miou'] <= 1
    # on these colour-coded scenes even raw features separate the classes well
    assert res['sources']['backbone.cat']['probe']['miou'] > 0.3

    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        evaluate.main([str(cfg_path), '--checkpoint', str(tmp_path / 'missing.pth')])
    with pytest.raises(FileNotFoundError, match='no such config'):
        train.main([str(tmp_path / 'missing_cfg.py')])


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    imgs, gt = make_data(tmp_path)
    cfg_path = tmp_path / 'tiny_cfg.py'
    cfg_path.write_text(CONFIG.format(imgs=imgs, gt=gt).replace(
        'max_iters=3, log_interval=1', 'max_iters=5, log_interval=1, checkpoint_interval=3'))
    train = load_tool('train')
    train.main([str(cfg_path), '--work-dir', str(tmp_path / 'straight'), '--no-progress'])

    save = train.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state['meta']['iter'] == 3:  # 2 batches per epoch: the middle of epoch 1
            raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(train, 'save_checkpoint', save_then_die)
    work = tmp_path / 'interrupted'
    with pytest.raises(KeyboardInterrupt):
        train.main([str(cfg_path), '--work-dir', str(work), '--no-progress'])
    monkeypatch.setattr(train, 'save_checkpoint', save)
    train.main([str(cfg_path), '--work-dir', str(work), '--no-progress', '--resume'])

    import torch
    straight = torch.load(tmp_path / 'straight' / 'latest.pth', weights_only=True)
    resumed = torch.load(work / 'latest.pth', weights_only=True)
    assert resumed['meta']['iter'] == straight['meta']['iter'] == 5
    assert straight['state_dict'].keys() == resumed['state_dict'].keys()
    for key, value in straight['state_dict'].items():  # weights, EMA key encoder, memory bank
        assert torch.equal(value, resumed['state_dict'][key]), key
    assert [e['loss_contrast'] for e in resumed['log']] == [e['loss_contrast'] for e in straight['log']]
