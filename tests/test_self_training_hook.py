"""SelfTrainingHook in a single-process Runner: refresh, dataloader swap, checkpoint and resume.

Also home of the tiny scenes and model config that test_pseudo_labels.py and test_dist_train.py import.
"""
import copy
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from freesolo_mmdet.engine.hooks.self_training_hook import SelfTrainingHook
from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic, masks_to_coco_annotations

NUM_IMAGES, SIZE, EMB = 6, 64, 8
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# random-init ResNet-18 at 1/4 width; conv_cls bias 1 so that the untrained model predicts masks
TINY_MODEL = dict(
    type='SOLOv2',
    data_preprocessor=dict(type='FreeSOLODataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3), init_cfg=None),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=16, start_level=0, num_outs=5),
    mask_head=dict(
        type='FreeSOLOHead', in_channels=16, feat_channels=16, stacked_convs=1, strides=(4, 8, 16, 32, 64),
        scale_ranges=((1, 24), (12, 48), (24, 96), (48, 192), (96, 2048)), num_grids=[12, 10, 8, 6, 4],
        emb_channels=EMB, norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
        mask_feature_head=dict(feat_channels=16, start_level=0, end_level=3, out_channels=16, mask_stride=4,
                               norm_cfg=dict(type='GN', num_groups=4, requires_grad=True)),
        init_cfg=dict(type='Normal', layer='Conv2d', std=0.01,
                      override=dict(type='Normal', name='conv_cls', std=0.01, bias=1.0))),
    test_cfg=dict(nms_pre=500, score_thr=0.1, mask_thr=0.5, filter_thr=0.05, kernel='gaussian', sigma=2.0,
                  max_per_img=100))


def write_scenes(root: Path) -> Path:
    """``root/images/{i}.png``: NUM_IMAGES noisy SIZE x SIZE images with two bright boxes each, and
    ``root/coarse.json``: the boxes' masks (ids 1..12, no emb). Returns ``root``."""
    (root / 'images').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(NUM_IMAGES):
        img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        masks = np.zeros((2, SIZE, SIZE), bool)
        for mask in masks:
            (x, y), (w, h) = rng.integers(0, 36, 2), rng.integers(12, 28, 2)
            mask[y:y + h, x:x + w] = True
            img[mask] = rng.integers(100, 255, 3)
        cv2.imwrite(str(root / 'images' / f'{i}.png'), img)
        images.append(dict(id=i + 1, file_name=f'{i}.png', height=SIZE, width=SIZE))
        annotations += masks_to_coco_annotations(masks, [0.9, 0.8], i + 1, start_id=len(annotations) + 1)
    dump_json_atomic(dict(images=images, annotations=annotations, categories=[dict(id=1, name='object')]),
                     str(root / 'coarse.json'))
    return root


def tiny_config(data_root: Path, work_dir: Path, max_iters: int, hook: dict, **overrides) -> dict:
    """A Runner config: the tiny model trained on ``coarse.json``, checkpoints every iteration."""
    cfg = dict(
        default_scope='mmdet',
        model=copy.deepcopy(TINY_MODEL),  # SOLOV2Head edits its mask_feature_head dict
        train_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dict(type='CoarseMaskCocoDataset', data_root=str(data_root), ann_file='coarse.json',
                         data_prefix=dict(img='images/'), emb_dim=EMB, filter_cfg=dict(filter_empty_gt=True),
                         pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadCoarseMaskAnnotations'),
                                   dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
                                   dict(type='PackCoarseMaskInputs')])),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001, momentum=0.9)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        custom_hooks=[dict(type='SelfTrainingHook', **hook)],
        test_pipeline=TEST_PIPELINE,
        work_dir=str(work_dir),
        randomness=dict(seed=0),
        log_level='WARNING')
    cfg.update(overrides)
    return cfg


class BatchProbe(Hook):
    """Records the number of gt instances of every sample the train loop receives, per iteration."""

    def __init__(self) -> None:
        self.counts = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.counts[runner.iter + 1] = {
            sample.img_id: len(sample.gt_instances) for sample in data_batch['data_samples']}


def build_runner(cfg: dict) -> Runner:
    """A Runner without ``cfg``: pretty-printing a config into every checkpoint costs 1 s."""
    cfg = dict(cfg)
    del cfg['test_pipeline']  # the hook is given the pipeline
    runner = Runner(**cfg)
    runner.register_hook(BatchProbe())
    return runner


def hook_of(runner: Runner, cls=SelfTrainingHook):
    return next(hook for hook in runner.hooks if isinstance(hook, cls))


def load(path) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory) -> Path:
    return write_scenes(tmp_path_factory.mktemp('scenes'))


HOOK = dict(refresh_at=[2], score_thr=0.0, max_per_img=3, max_width=None, pipeline=TEST_PIPELINE)


def test_refresh_swaps_the_training_labels(scenes, tmp_path):
    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=4, hook=HOOK))
    runner.train()
    assert runner.iter == 4
    hook, probe = hook_of(runner), hook_of(runner, BatchProbe)
    ann_file = tmp_path / 'self_training' / 'round1.json'
    assert hook.round == 1 and hook.ann_file == str(ann_file)
    coco = load(ann_file)
    report = load(tmp_path / 'self_training' / 'round1.report.json')
    assert report['num_annotations'] == len(coco['annotations']) == 3 * NUM_IMAGES  # max_per_img
    assert sorted(image['id'] for image in coco['images']) == list(range(1, NUM_IMAGES + 1))
    assert [ann['id'] for ann in coco['annotations']] == list(range(1, 3 * NUM_IMAGES + 1))
    assert all(len(ann['emb']) == EMB and ann['iscrowd'] == 0 for ann in coco['annotations'])

    dataset = runner.train_dataloader.dataset
    assert dataset.ann_file == str(ann_file) and len(dataset) == NUM_IMAGES
    boxes = {}
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        boxes.setdefault(ann['image_id'], []).append([x, y, x + w, y + h])
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        assert [instance['bbox'] for instance in info['instances']] == boxes[info['img_id']]
    # what the train loop receives: 2 coarse masks per image before the refresh, 3 pseudo labels after
    assert {n for it in (1, 2) for n in probe.counts[it].values()} == {2}
    assert {n for it in (3, 4) for n in probe.counts[it].values()} == {3}
    # checkpoints carry the round; the refresh at iteration 2 precedes its checkpoint
    meta = {it: torch.load(tmp_path / f'iter_{it}.pth', weights_only=True)['meta']['self_training'] for it in (1, 2)}
    assert meta == {1: dict(round=0, ann_file=None), 2: dict(round=1, ann_file=str(ann_file))}


def test_kill_and_resume_keeps_the_refreshed_labels(scenes, tmp_path):
    build_runner(tiny_config(scenes, tmp_path, max_iters=3, hook=HOOK)).train()
    ann_file = tmp_path / 'self_training' / 'round1.json'
    written = ann_file.stat().st_mtime_ns, ann_file.read_bytes()

    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=5, hook=HOOK, resume=True))
    runner.train()
    hook, probe = hook_of(runner), hook_of(runner, BatchProbe)
    assert runner.iter == 5 and hook.round == 1
    assert runner.train_dataloader.dataset.ann_file == str(ann_file)
    assert (ann_file.stat().st_mtime_ns, ann_file.read_bytes()) == written  # no second refresh
    assert not (tmp_path / 'self_training' / 'round2.json').exists()
    assert sorted(probe.counts) == [4, 5]
    assert {n for counts in probe.counts.values() for n in counts.values()} == {3}


def test_resume_before_the_refresh_does_it(scenes, tmp_path):
    build_runner(tiny_config(scenes, tmp_path, max_iters=1, hook=HOOK)).train()
    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=2, hook=HOOK, resume=True))
    runner.train()
    assert hook_of(runner).round == 1 and (tmp_path / 'self_training' / 'round1.json').exists()


def test_interval_and_load_from_without_resume(scenes, tmp_path):
    hook = dict(HOOK, refresh_at=(), interval=1, out_dir=str(tmp_path / 'labels'))
    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=2, hook=hook))
    runner.train()
    assert hook_of(runner).round == 2
    assert sorted(os.listdir(tmp_path / 'labels')) == [
        'round1.json', 'round1.report.json', 'round2.json', 'round2.report.json']
    # load_from (fine-tuning, not resuming) restores weights only: the config's labels are used
    runner = build_runner(tiny_config(scenes, tmp_path / 'new', max_iters=1, hook=HOOK,
                                      load_from=str(tmp_path / 'iter_2.pth')))
    runner.train()
    assert hook_of(runner).round == 0
    assert runner.train_dataloader.dataset.ann_file == str(scenes / 'coarse.json')


def test_by_epoch_refreshes_for_the_next_epoch(scenes, tmp_path):
    cfg = tiny_config(scenes, tmp_path, max_iters=0, hook=dict(HOOK, refresh_at=[1], by_epoch=True),
                      train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=2))
    cfg['train_dataloader']['sampler'] = dict(type='DefaultSampler', shuffle=True)
    cfg['default_hooks']['checkpoint'] = dict(type='CheckpointHook', interval=1)
    runner = build_runner(cfg)
    runner.train()
    counts = hook_of(runner, BatchProbe).counts
    assert runner.epoch == 2 and hook_of(runner).round == 1 and sorted(counts) == list(range(1, 7))
    assert [set(counts[it].values()) for it in range(1, 7)] == [{2}] * 3 + [{3}] * 3  # 3 batches per epoch


def test_no_pseudo_label_and_bad_arguments(scenes, tmp_path):
    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=1, hook=dict(HOOK, refresh_at=[1], score_thr=2.0)))
    with pytest.raises(RuntimeError, match='no prediction passed the filters'):
        runner.train()
    with pytest.raises(ValueError, match='either refresh_at or interval'):
        SelfTrainingHook(refresh_at=[2], interval=2)
    with pytest.raises(ValueError, match='either refresh_at or interval'):
        SelfTrainingHook()
    with pytest.raises(ValueError, match='positive'):
        SelfTrainingHook(refresh_at=[0])
