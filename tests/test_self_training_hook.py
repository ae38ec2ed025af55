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


class WeightProbe(Hook):
    """Records, after every iteration (after SelfTrainingHook's refresh: lower priority), whether the
    model's weights (parameters and buffers) equal those at ``before_train`` and whether the optimizer
    state is empty."""

    def __init__(self) -> None:
        self.initial, self.equal, self.state_empty = None, {}, {}

    @staticmethod
    def state(runner) -> dict:
        return {key: value.detach().clone() for key, value in runner.model.state_dict().items()}

    def before_train(self, runner) -> None:
        self.initial = self.state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        current = self.state(runner)
        self.equal[runner.iter + 1] = all(torch.equal(current[key], self.initial[key]) for key in current)
        self.state_empty[runner.iter + 1] = len(runner.optim_wrapper.optimizer.state) == 0


def build_runner(cfg: dict) -> Runner:
    """A Runner with the probes. Its ``cfg`` holds what SelfTrainingHook reads (``train_dataloader``,
    ``randomness``), not the whole config: yapf-formatting that into every checkpoint costs 1 s
    (``tests/test_dist_train.py`` goes through ``Runner.from_cfg``)."""
    kwargs = dict(cfg)
    del kwargs['test_pipeline']  # the hook is given the pipeline
    runner = Runner(**kwargs, cfg=dict(train_dataloader=cfg['train_dataloader'], randomness=cfg['randomness']))
    runner.register_hook(BatchProbe())
    runner.register_hook(WeightProbe(), 'LOW')
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
    assert hook.round == 1 and hook.ann_files == [str(ann_file)]
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
    assert meta == {1: dict(round=0, ann_files=None, initial_weights=None),
                    2: dict(round=1, ann_files=[str(ann_file)], initial_weights=None)}
    # by default training goes on from the current weights and optimizer state
    weights = hook_of(runner, WeightProbe)
    assert not any(weights.equal.values()) and not any(weights.state_empty.values())
    assert not (tmp_path / 'self_training' / 'initial_weights.pth').exists()


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


def test_reset_weights_restores_the_initial_weights_and_empties_the_optimizer(scenes, tmp_path):
    runner = build_runner(tiny_config(scenes, tmp_path, max_iters=3, hook=dict(HOOK, reset_weights=True)))
    runner.train()
    hook, weights = hook_of(runner), hook_of(runner, WeightProbe)
    # iteration 2 ends with the refresh: the weights are those before iteration 1 again, bit for bit,
    # and SGD's momentum buffers are gone; iterations 1 and 3 train
    assert weights.equal == {1: False, 2: True, 3: False}
    assert weights.state_empty == {1: False, 2: True, 3: False}
    assert hook_of(runner, BatchProbe).counts[3] and hook.round == 1
    saved = torch.load(tmp_path / 'self_training' / 'initial_weights.pth', weights_only=True)
    assert saved.keys() == weights.initial.keys()
    assert all(torch.equal(saved[key], weights.initial[key]) for key in saved)
    meta = torch.load(tmp_path / 'iter_2.pth', weights_only=True)['meta']['self_training']
    assert meta['initial_weights'] == str(tmp_path / 'self_training' / 'initial_weights.pth')


def test_reset_weights_after_resume_uses_the_first_runs_initial_weights(scenes, tmp_path):
    hook = dict(HOOK, refresh_at=[2, 4], reset_weights=True)
    first = build_runner(tiny_config(scenes, tmp_path, max_iters=3, hook=hook))
    first.train()
    initial = hook_of(first, WeightProbe).initial
    resumed = build_runner(tiny_config(scenes, tmp_path, max_iters=5, hook=hook, resume=True))
    resumed.train()
    assert hook_of(resumed).round == 2 and resumed.iter == 5
    weights = hook_of(resumed, WeightProbe)  # its snapshot: the iteration-3 weights
    assert not torch.equal(weights.initial['mask_head.conv_cls.weight'], initial['mask_head.conv_cls.weight'])
    # the refresh after iteration 4 went back to the first run's initial weights (read from disk)
    final = build_runner(tiny_config(scenes, tmp_path / 'check', max_iters=0, hook=HOOK))
    final.load_checkpoint(str(tmp_path / 'iter_4.pth'))
    state = final.model.state_dict()
    assert all(torch.equal(state[key], initial[key]) for key in initial)
    assert weights.state_empty == {4: True, 5: False}
    # a run resumed without known initial weights cannot reset
    build_runner(tiny_config(scenes, tmp_path / 'plain', max_iters=1, hook=HOOK)).train()
    with pytest.raises(FileNotFoundError, match='initial weights'):
        build_runner(tiny_config(scenes, tmp_path / 'plain', max_iters=2, hook=hook, resume=True)).train()


def test_concat_of_wrapped_datasets_relabels_every_leaf(scenes, tmp_path):
    """ConcatDataset([coarse.json, RepeatDataset(ClassBalancedDataset(second.json))]): second.json holds
    images 4.png and 5.png under ids 1 and 2, which coarse.json gives to 0.png and 1.png."""
    coarse = load(scenes / 'coarse.json')
    second = dict(images=[dict(coarse['images'][4], id=1), dict(coarse['images'][5], id=2)],
                  annotations=[dict(ann, image_id=ann['image_id'] - 4) for ann in coarse['annotations']
                               if ann['image_id'] in (5, 6)],
                  categories=coarse['categories'])
    dump_json_atomic(second, str(tmp_path / 'second.json'))
    cfg = tiny_config(scenes, tmp_path, max_iters=3, hook=HOOK)
    first_cfg = cfg['train_dataloader']['dataset']
    second_cfg = dict(first_cfg, ann_file=str(tmp_path / 'second.json'))
    cfg['train_dataloader']['dataset'] = dict(type='ConcatDataset', datasets=[
        first_cfg, dict(type='RepeatDataset', times=2,
                        dataset=dict(type='ClassBalancedDataset', oversample_thr=0.5, dataset=second_cfg))])
    runner = build_runner(cfg)
    assert len(runner.train_dataloader.dataset) == NUM_IMAGES + 2 * 2
    runner.train()

    hook = hook_of(runner)
    out_dir = tmp_path / 'self_training'
    files = [out_dir / 'round1_dataset0.json', out_dir / 'round1_dataset1.json']
    assert hook.round == 1 and hook.ann_files == [str(path) for path in files]
    assert sorted(os.listdir(out_dir)) == ['round1_dataset0.json', 'round1_dataset0.report.json',
                                           'round1_dataset1.json', 'round1_dataset1.report.json']
    labels = [load(path) for path in files]
    # each leaf's own images, each once (the repeats are not labelled twice), under its own ids
    assert [(image['id'], image['file_name']) for image in labels[0]['images']] == [
        (i + 1, f'{i}.png') for i in range(NUM_IMAGES)]
    assert [(image['id'], image['file_name']) for image in labels[1]['images']] == [(1, '4.png'), (2, '5.png')]
    assert len(labels[0]['annotations']) == 3 * NUM_IMAGES and len(labels[1]['annotations']) == 3 * 2
    # the same pixels got the same masks in both files
    for new_id, old_id in ((1, 5), (2, 6)):
        assert [ann['segmentation'] for ann in labels[1]['annotations'] if ann['image_id'] == new_id] == \
            [ann['segmentation'] for ann in labels[0]['annotations'] if ann['image_id'] == old_id]
    dataset = runner.train_dataloader.dataset  # rebuilt around the new files, wrappers and all
    leaves = [dataset.datasets[0], dataset.datasets[1].dataset.dataset]
    assert type(dataset.datasets[1].dataset).__name__ == 'ClassBalancedDataset'
    assert [leaf.ann_file for leaf in leaves] == [str(path) for path in files]
    assert len(dataset) == NUM_IMAGES + 2 * 2
    assert {n for it in (1, 2) for n in hook_of(runner, BatchProbe).counts[it].values()} == {2}
    assert set(hook_of(runner, BatchProbe).counts[3].values()) == {3}
