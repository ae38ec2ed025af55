"""Every config parses and builds; ``mim train`` runs the FreeSOLO recipe end to end (2 iterations)."""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import warnings

import numpy as np
import pytest
from mmengine.config import Config

from freesolo_mmdet.datasets.demo_scenes import make_demo_dataset
from freesolo_mmdet.models.data_preprocessors.color_similarity import FreeSOLODataPreprocessor
from freesolo_mmdet.models.dense_heads.freesolo_head import FreeSOLOHead
from mmdet.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(path, REPO) for path in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if f'{osp.sep}_base_{osp.sep}' not in path)
LOSS_KEYS = ('loss_maxproj', 'loss_avgproj', 'loss_pairwise', 'loss_cls', 'loss_emb')


@pytest.mark.parametrize('config', CONFIGS)
def test_config_parses_and_builds(config):
    """Every config parses; those in the mmdet scope build their model (mmpretrain-scope configs, e.g.
    DenseCL pre-training, are only parsed: building them imports mmpretrain.models, which needs
    torchvision). FreeSOLO configs are one-class, class-agnostic and without SOLOv2's dice loss."""
    cfg = Config.fromfile(osp.join(REPO, config))
    assert 'type' in cfg.model
    if cfg.get('default_scope', 'mmdet') != 'mmdet':
        return
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='FreeSOLOHead ignores')  # loss_mask must be removed
        model = MODELS.build(cfg.model)  # no init_weights: no downloads
    if not isinstance(getattr(model, 'mask_head', None), FreeSOLOHead):
        return
    assert isinstance(model.data_preprocessor, FreeSOLODataPreprocessor)
    assert model.mask_head.num_classes == 1
    assert model.data_preprocessor.mask_stride == model.mask_head.mask_stride == 4
    assert cfg.train_dataloader.dataset.type == 'CoarseMaskCocoDataset'
    assert cfg.val_evaluator.type == 'ClassAgnosticCocoMetric'


def test_r50_recipe_folds_the_frozen_bn_into_the_convolutions():
    """``efficient_conv_bn_eval = ['backbone']``: the runner folds each frozen BN into its convolution; the backbone's
    features and the convolutions' weight gradients equal those of the unfolded backbone (random BN statistics)."""
    import copy

    import torch
    from mmengine.model.efficient_conv_bn_eval import turn_on_efficient_conv_bn_eval
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'freesolo_r50.py'))
    assert cfg.efficient_conv_bn_eval == ['backbone']
    torch.manual_seed(0)
    plain = MODELS.build(dict(cfg.model.backbone, init_cfg=None, depth=18, type='ResNet'))
    for module in plain.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.5)
    model = torch.nn.Module()
    model.backbone = copy.deepcopy(plain)
    turn_on_efficient_conv_bn_eval(model, cfg.efficient_conv_bn_eval)
    assert 'forward' in vars(model.backbone)  # the traced, folded forward replaced the module's
    plain.train(), model.train()  # norm_eval: BN stays in eval mode, the fold's case
    inputs = torch.randn(2, 3, 64, 96)
    outs, folded_outs = plain(inputs), model.backbone(inputs)
    for out, folded in zip(outs, folded_outs):
        torch.testing.assert_close(folded, out, rtol=1e-4, atol=1e-5)
    sum((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() for out in outs).backward()
    sum((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() for out in folded_outs).backward()
    grads = dict(model.backbone.named_parameters())
    checked = 0
    for name, param in plain.named_parameters():
        if param.grad is not None:
            assert (grads[name].grad - param.grad).abs().max() <= 1e-3 * param.grad.abs().max(), name
            checked += 1
    assert checked == 20  # ResNet-18's convolutions: stem, 16 in the blocks, 3 downsamples


def test_r50_recipe():
    """The release recipe of spec section 2."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'freesolo_r50.py'))
    backbone, head = cfg.model.backbone, cfg.model.mask_head
    assert (backbone.depth, backbone.frozen_stages, backbone.norm_cfg.requires_grad, backbone.norm_eval) == \
        (50, -1, False, True)
    assert backbone.init_cfg.prefix == 'backbone.' and 'densecl_resnet50' in backbone.init_cfg.checkpoint
    assert (head.loss_mask_maxproj.loss_weight, head.loss_mask_avgproj.loss_weight,
            head.loss_mask_pairwise.loss_weight, head.loss_mask_pairwise.warmup_iters,
            head.loss_mask_pairwise.color_threshold) == (1.0, 0.1, 1.0, 1000, 0.3)
    assert head.num_grids == [40, 36, 24, 16, 12]
    assert dict(cfg.optim_wrapper.optimizer) == dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0001)
    assert cfg.optim_wrapper.clip_grad is None
    assert [dict(s) for s in cfg.param_scheduler] == [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=1000)
    ]
    assert (cfg.train_cfg.type, cfg.train_cfg.max_iters) == ('IterBasedTrainLoop', 30000)
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    resize = cfg.train_pipeline[2]
    assert resize.type == 'RandomChoiceResize' and resize.keep_ratio
    assert sorted(min(scale) for scale in resize.scales) == [640, 672, 704, 736, 768, 800]
    assert cfg.model.data_preprocessor.batch_augments[0].type == 'TwoViewAugment'
    # the README's COCO recipe: one Free Mask json over data/coco/train_unlabeled/{train2017,unlabeled2017}
    # (round 2 overrides train_dataloader.dataset.ann_file), every image read by LoadAnyImageFromFile
    data = cfg.train_dataloader.dataset
    assert (data.type, data.data_root, data.ann_file, data.data_prefix) == (
        'CoarseMaskCocoDataset', 'data/coco/', 'annotations/free_masks_train.json', dict(img='train_unlabeled/'))
    assert data.pipeline[0].type == 'LoadAnyImageFromFile'
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.pipeline[0].type == 'LoadAnyImageFromFile'
        assert loader.dataset.data_prefix == dict(img='val2017/')
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'
    r101 = Config.fromfile(osp.join(REPO, 'configs', 'freesolo_r101.py'))
    assert r101.model.backbone.depth == 101 and r101.model.backbone.frozen_stages == -1
    assert r101.train_dataloader.dataset == data


def test_finetune_configs():
    """Both 5% fine-tuning configs train the same 80-class SOLOv2 on the same split; the FreeSOLO one loads,
    by default, the last checkpoint of configs/freesolo_r50.py's schedule in the round-2 work dir of the
    README (which passes work_dirs/freesolo_r50_round2/last_checkpoint's path instead)."""
    r50 = Config.fromfile(osp.join(REPO, 'configs', 'freesolo_r50.py'))
    densecl, freesolo = (Config.fromfile(osp.join(REPO, 'configs', 'finetune', f'solov2_r50_fpn_coco-5pct_{init}.py'))
                         for init in ('densecl', 'freesolo'))
    for cfg in (densecl, freesolo):
        assert cfg.model.mask_head.num_classes == 80
        assert cfg.train_dataloader.dataset.ann_file == 'annotations/semi_anns/instances_train2017.1@5.json'
        assert cfg.train_cfg.max_epochs == 36
    assert densecl.model.backbone.init_cfg == r50.model.backbone.init_cfg
    assert densecl.get('load_from') is None
    assert freesolo.model.backbone.init_cfg is None
    assert freesolo.load_from == f'work_dirs/freesolo_r50_round2/iter_{r50.train_cfg.max_iters}.pth'


def write_coarse_masks(gt_file: str, out_file: str) -> None:
    """Free-Mask-like json from a ground truth: every mask gets a ``score`` and a unit ``emb``."""
    with open(gt_file) as f:
        coco = json.load(f)
    rng = np.random.default_rng(0)
    for ann in coco['annotations']:
        emb = rng.normal(size=128)
        ann.update(score=float(rng.uniform(0.7, 1.0)), emb=(emb / np.linalg.norm(emb)).tolist())
    with open(out_file, 'w') as f:
        json.dump(coco, f)


TINY_CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    mask_head=dict(
        in_channels=32, feat_channels=32, stacked_convs=1,
        mask_feature_head=dict(feat_channels=16, out_channels=32,
                               norm_cfg=dict(type='GN', num_groups=8, requires_grad=True))))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CoarseMaskCocoDataset', data_root='', ann_file={ann_file!r},
                 data_prefix=dict(img={img_dir!r}), pipeline=[
                     dict(type='LoadImageFromFile'),
                     dict(type='LoadCoarseMaskAnnotations'),
                     dict(type='RandomChoiceResize', scales=[(128, 64), (128, 96)], keep_ratio=True),
                     dict(type='RandomFlip', prob=0.5),
                     dict(type='PackCoarseMaskInputs')]))
train_cfg = dict(max_iters=2, val_interval=1000)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
log_processor = dict(window_size=1)
"""


def test_mim_train_two_iterations(tmp_path):
    make_demo_dataset(str(tmp_path / 'demo'), num_train=4, num_val=2, image_size=96)
    ann_file = str(tmp_path / 'coarse_masks.json')
    write_coarse_masks(str(tmp_path / 'demo' / 'annotations' / 'train_gt.json'), ann_file)
    config = tmp_path / 'tiny_freesolo.py'
    config.write_text(
        TINY_CONFIG.format(
            base=osp.join(REPO, 'configs', 'freesolo_r50.py'), ann_file=ann_file,
            img_dir=str(tmp_path / 'demo' / 'train') + '/'))
    work_dir = tmp_path / 'work'
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    result = subprocess.run(
        [mim, 'train', 'mmdet', str(config), '--gpus', '0', '--work-dir', str(work_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (work_dir / 'iter_2.pth').is_file()

    scalars = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    assert len(scalars) == 1
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f]
    assert [r['iter'] for r in records] == [1, 2]
    for record in records:
        for key in LOSS_KEYS:
            assert math.isfinite(record[key]), (key, record)
        assert record['loss'] == pytest.approx(sum(record[key] for key in LOSS_KEYS), rel=1e-3, abs=1e-3)
    assert all(records[1][key] > 0 for key in ('loss_maxproj', 'loss_avgproj', 'loss_cls', 'loss_emb'))
