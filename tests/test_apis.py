"""freesolo_mmdet.apis pieces: strict config overrides, writability checks, stage records, config
derivation for any train dataset (plain, RepeatDataset, ConcatDataset), and the per-process batch."""
import json
import os
import os.path as osp
from pathlib import Path

import pytest
from mmengine.config import Config

from freesolo_mmdet.apis import (InputError, StageRecord, check_writable, derive_train_config,
                                 image_fingerprint, load_config, retarget_train_dataset, self_training_options,
                                 stretch_schedulers)
from freesolo_mmdet.apis.pipeline import overlay_path

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / 'configs' / 'demo' / 'freesolo_light_demo.py')
R50 = str(REPO / 'configs' / 'freesolo_r50.py')


@pytest.mark.parametrize('key', [
    'train_cfg.max_iters',  # existing
    'train_dataloader.dataset.pipeline.2.scales',  # list index
    'model.backbone.with_cp',  # MobileNetV2 takes with_cp, not in the config
    'find_unused_parameters',  # read by the Runner, not in the config
    'load_from',
])
def test_cfg_options_that_name_a_real_setting_pass(key):
    cfg = load_config(DEMO, {key: 1} if not key.endswith('scales') else {key: [(64, 64)]})
    assert cfg.get(key.split('.')[0]) is not None


@pytest.mark.parametrize('key, message', [
    ('train_cfg.max_iter', "'max_iter' is not a key of train_cfg; did you mean 'max_iters'?"),
    ('model.backbone.frozen_stage', "'frozen_stage' is not a key of model.backbone; did you mean 'frozen_stages'?"),
    ('modle.backbone.depth', "'modle' is not a key of the config; did you mean 'model'?"),
    ('train_dataloader.dataset.pipeline.9.scale', 'is a list of 5 items'),
    ('optim_wrapper.optimizer.lr.x', 'optim_wrapper.optimizer.lr is a float, not a dict'),
])
def test_cfg_option_typos_are_refused_before_any_work(key, message):
    with pytest.raises(InputError) as error:
        load_config(DEMO, {key: 1})
    assert message in str(error.value)


def test_custom_hook_typos_are_refused_before_any_work(tmp_path):
    # the Free Mask, pseudo-label and predict stages build their models outside a runner: without this check a
    # misspelt ChannelsLastHook would be ignored there
    with pytest.raises(InputError, match="no hook is registered as 'ChanelsLastHook'; did you mean 'ChannelsLastHook'"):
        load_config(DEMO, {'custom_hooks.0.type': 'ChanelsLastHook'})
    # hooks of mmengine's registry (mmdet's parent), of mmdet's and of this package pass
    config = tmp_path / 'hooks.py'
    config.write_text(f"_base_ = {DEMO!r}\ncustom_hooks = [dict(type='EMAHook'), dict(type='NumClassCheckHook'), "
                      "dict(type='ChannelsLastHook')]\n")
    assert [hook['type'] for hook in load_config(str(config)).custom_hooks] == [
        'EMAHook', 'NumClassCheckHook', 'ChannelsLastHook']


def test_load_config_of_a_missing_file():
    with pytest.raises(InputError, match='no such config: nope.py'):
        load_config('nope.py')


def test_check_writable(tmp_path):
    assert check_writable(str(tmp_path / 'new' / 'out.json')) == str(tmp_path / 'new' / 'out.json')
    assert (tmp_path / 'new').is_dir() and os.listdir(tmp_path / 'new') == []  # the probe is gone
    with pytest.raises(InputError, match='is a folder'):
        check_writable(str(tmp_path / 'new'))
    (tmp_path / 'file').write_text('x')
    with pytest.raises(InputError, match='cannot write'):
        check_writable(str(tmp_path / 'file' / 'out.json'))


def test_stage_record_says_what_changed(tmp_path):
    images = []
    for name in ('a.jpg', 'b.jpg'):
        (tmp_path / name).write_bytes(b'12')
        images.append(dict(file_name=name, path=str(tmp_path / name)))
    out = tmp_path / 'out.json'
    record = StageRecord(str(tmp_path / 'rec'), 'stage', dict(images=image_fingerprint(images), thr=0.3), [str(out)])
    assert record.changes() == 'not run yet'
    record.start(clear=True)
    assert record.changes() == 'unfinished' and record.is_started_with_same_inputs()
    out.write_text('{}')
    record.finish(checkpoint='x.pth')
    assert record.changes() is None and record.result() == dict(checkpoint='x.pth')
    identity = record.identity

    (tmp_path / 'c.jpg').write_bytes(b'3')
    (tmp_path / 'a.jpg').write_bytes(b'123')
    images = images[:1] + [dict(file_name='c.jpg', path=str(tmp_path / 'c.jpg'))]
    changed = StageRecord(str(tmp_path / 'rec'), 'stage', dict(images=image_fingerprint(images), thr=0.5), [str(out)])
    assert changed.changes() == 'images changed (1 added, 1 removed, 1 modified), thr 0.3 -> 0.5'
    assert not changed.is_started_with_same_inputs()
    changed.start(clear=True)
    assert not out.exists()  # the stale output is gone before the stage reruns
    downstream = StageRecord(str(tmp_path / 'rec'), 'next', dict(upstream=record.upstream()), [])
    downstream.start(clear=False)
    downstream.finish()
    moved = StageRecord(str(tmp_path / 'rec'), 'next', dict(upstream={'stage': identity + 'x'}), [])
    assert moved.changes() == 'stage changed'


def test_stage_record_without_its_output_reruns(tmp_path):
    out = tmp_path / 'out.json'
    record = StageRecord(str(tmp_path / 'rec'), 's', dict(x=1), [str(out)], scratch=[str(tmp_path / 'parts')])
    record.start(clear=True)
    out.write_text('{}')
    record.finish()
    assert record.changes() is None  # scratch is not required
    out.unlink()
    assert record.changes() == f'output missing: {out}'
    json.loads((tmp_path / 'rec' / 's.json').read_text())  # the record is plain json


def coarse_dataset(**extra):
    return dict(type='CoarseMaskCocoDataset', data_root='data/coco/', ann_file='annotations/x.json',
                data_prefix=dict(img='train2017/'), pipeline=[dict(type='LoadAnyImageFromFile')], **extra)


def test_retarget_any_train_dataset(tmp_path):
    ann, img = str(tmp_path / 'masks.json'), str(tmp_path / 'imgs')
    want = dict(coarse_dataset(), data_root='', ann_file=ann, data_prefix=dict(img=img + os.sep))
    assert retarget_train_dataset(coarse_dataset(), ann, img) == want
    repeat = dict(type='RepeatDataset', times=3, dataset=coarse_dataset())
    assert retarget_train_dataset(repeat, ann, img) == dict(type='RepeatDataset', times=3, dataset=want)
    concat = dict(type='ConcatDataset', datasets=[coarse_dataset(), coarse_dataset(emb_dim=64)])
    assert retarget_train_dataset(concat, ann, img) == want
    nested = dict(type='ClassBalancedDataset', oversample_thr=0.1, dataset=concat)
    assert retarget_train_dataset(nested, ann, img)['dataset'] == want


@pytest.mark.parametrize('world_size, per_process', [(1, 16), (2, 8), (8, 2), (3, 5)])
def test_recipe_total_batch_over_processes(tmp_path, world_size, per_process):
    """freesolo_r50: 16 images per iteration in total; auto_scale_lr follows what is really used."""
    cfg = derive_train_config(Config.fromfile(R50), str(tmp_path / 'm.json'), str(tmp_path), str(tmp_path / 'w'),
                              max_iters=100, world_size=world_size)
    assert cfg.train_dataloader.batch_size == per_process and cfg.auto_scale_lr.enable
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.dataset.ann_file == str(tmp_path / 'm.json')
    assert cfg.default_hooks.checkpoint.interval == 5  # 5% of 100 iterations
    assert cfg.val_dataloader is None and cfg.train_cfg.max_iters == 100


def test_checkpoint_interval_is_5_percent_rounded_up(tmp_path):
    for iters, interval in ((600, 30), (4, 1), (41, 3)):
        cfg = derive_train_config(Config.fromfile(DEMO), 'm.json', '.', str(tmp_path), max_iters=iters, world_size=1)
        assert cfg.default_hooks.checkpoint.interval == interval
        assert cfg.train_dataloader.batch_size == 4  # the demo's total batch on one process


def test_a_decay_to_the_end_is_stretched_to_the_rounds_iterations():
    warmup = dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20)
    decay = dict(type='CosineAnnealingLR', eta_min_ratio=0.01, by_epoch=False, begin=300, end=600)
    by_epoch = dict(type='MultiStepLR', milestones=[8], by_epoch=True, begin=0, end=600)
    steps = dict(type='MultiStepLR', milestones=[400, 550], by_epoch=False, begin=20, end=600)
    half = stretch_schedulers([warmup, decay, by_epoch, steps], 600, 300)
    assert half[0] == warmup and half[2] == by_epoch  # a warm-up keeps its length; epochs are not iterations
    assert (half[1]['begin'], half[1]['end']) == (150, 300) and half[1]['eta_min_ratio'] == 0.01
    assert half[3] == dict(steps, begin=10, end=300, milestones=[200, 275])
    assert stretch_schedulers(dict(decay, T_max=300), 600, 300)['T_max'] == 150
    assert stretch_schedulers(decay, 600, 900) == dict(decay, begin=450, end=900)
    assert decay['end'] == 600  # the config's own dict is not changed
    assert stretch_schedulers(None, 600, 300) is None


def test_a_shorter_round_decays_its_learning_rate_to_its_own_end(tmp_path):
    """The pipeline's later rounds are shorter than round 1: their lr reaches its floor at their last
    iteration, not half way down the curve."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    config = Config.fromfile(DEMO.replace('demo.py', 'demo_lr_decay.py'))
    assert config.param_scheduler[-1].end == config.train_cfg.max_iters == 600  # it decays to round 1's end
    cfg = derive_train_config(config, 'm.json', '.', str(tmp_path), max_iters=300, world_size=1)
    base_lr = 0.001
    optimizer = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr))
    schedulers = [PARAM_SCHEDULERS.build(dict(scheduler, optimizer=optimizer)) for scheduler in cfg.param_scheduler]
    lrs = []
    for _ in range(300):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    assert lrs[0] == pytest.approx(0.01 * base_lr)  # the warm-up starts at 1%
    assert lrs[100] == pytest.approx(base_lr)  # flat to half way
    assert lrs[225] == pytest.approx(base_lr * (0.01 + 0.99 * 0.5), rel=0.02)  # cosine: half way down at 3/4
    assert lrs[-1] == pytest.approx(0.01 * base_lr, rel=0.05)  # the floor at the round's last iteration


def test_overlay_names_are_unique():
    names = ['a/x.jpg', 'b/x.jpg', 'img.bmp', 'img.webp', 'x', 'x.jpg']
    paths = [overlay_path('o', name) for name in names]
    assert len(set(paths)) == len(names)
    assert paths[0] == osp.join('o', 'a', 'x.jpg.jpg')


def test_train_tool_refuses_a_cfg_options_typo():
    import importlib.util
    spec = importlib.util.spec_from_file_location('train_tool', REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = tool.build_config(tool.parse_args([DEMO, '--cfg-options', 'train_cfg.max_iters=3']))
    assert cfg.train_cfg.max_iters == 3
    with pytest.raises(InputError, match="'max_iter' is not a key of train_cfg"):
        tool.build_config(tool.parse_args([DEMO, '--cfg-options', 'train_cfg.max_iter=3']))


def test_forked_children_end_with_their_parent(tmp_path):
    """A kill -9 of a process that called end_children_with_this_process() takes its forked children
    (data loader workers) with it."""
    import signal
    import subprocess
    import sys
    import time
    script = ('import os, sys, time\n'
              'from freesolo_mmdet.utils.process import end_children_with_this_process as e\n'
              'if sys.argv[1] == "on": e()\n'
              'pid = os.fork()\n'
              'if pid == 0:\n'
              '    time.sleep(60); os._exit(0)\n'
              'print(pid, flush=True); time.sleep(60)\n')
    for mode, survives in (('off', True), ('on', False)):
        proc = subprocess.Popen([sys.executable, '-c', script, mode], stdout=subprocess.PIPE, text=True)
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        alive = os.path.exists(f'/proc/{child}') and 'Z' not in open(f'/proc/{child}/stat').read().split()[2]
        if alive:
            os.kill(child, signal.SIGKILL)
        assert alive == survives, mode


def test_every_config_path_named_in_docs_and_tools_exists():
    """The README, the tools' docstrings and the configs' comments name only configs that exist (the old
    gen_pseudo_labels.py docstring named './freesolo_r50_coarse.py'); a config inside a work dir is what a
    run writes there, so it is not looked for."""
    import re
    texts = [REPO / 'README.md', *sorted((REPO / 'tools').glob('*.py')), *sorted((REPO / 'configs').rglob('*.py'))]
    named = set()
    for path in texts:
        pattern = r'(?<![\w/.])((?:\./|\.\./)*(?:configs/)?[\w./-]*freesolo[\w-]*\.py)'
        for match in re.finditer(pattern, path.read_text()):
            named.add((path, match.group(1)))
    missing = []
    for path, name in named:
        name = name.lstrip('/')  # '<repo>/tools/x.py'
        if name.startswith(('work_dirs/', './work_dirs/')):
            continue  # a config that a run writes into its work dir, not one that ships
        candidates = [REPO / name, path.parent / name, REPO / 'configs' / name, REPO / 'tools' / name]
        if not any(c.is_file() for c in candidates):
            missing.append(f'{path.relative_to(REPO)}: {name}')
    assert missing == []
    assert len(named) > 10


def test_self_training_hook_uses_no_private_mmengine_state():
    source = (REPO / 'freesolo_mmdet' / 'engine' / 'hooks' / 'self_training_hook.py').read_text()
    assert 'runner._' not in source and '_InfiniteDataloaderIterator' not in source
    assert '_randomness_cfg' not in source and '_train_dataloader' not in source


def test_building_a_model_leaves_its_config_as_it_was():
    """mmdet's SOLOv2 writes test_cfg and in_channels into the dicts it is built from; the pipeline's
    round 2 then recorded another config than its rerun computed, and was retrained for nothing."""
    from freesolo_mmdet.datasets.image_list import build_inference_model
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(DEMO)
    cfg.model.backbone.init_cfg = None
    before = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    build_inference_model(cfg, None, 'cpu')
    assert json.dumps(cfg.to_dict(), sort_keys=True, default=str) == before


@pytest.mark.parametrize('error', [None, InputError('bad input')])
def test_run_main_destroys_the_process_group_it_leaves(error, monkeypatch):
    """Left to the interpreter's teardown, a gloo group can abort its process after the work is done
    ("terminate called without an active exception"); run_main destroys it, on success and on error."""
    import torch.distributed as dist

    from freesolo_mmdet.apis.cli import run_main
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(29000 + os.getpid() % 1000))
    monkeypatch.setattr('signal.signal', lambda *args: None)  # leave pytest's handlers alone

    def main(argv):
        dist.init_process_group('gloo', rank=0, world_size=1)
        assert dist.is_initialized()
        if error is not None:
            raise error

    if error is None:
        run_main(main, [])
    else:
        with pytest.raises(SystemExit) as exit_info:
            run_main(main, [])
        assert exit_info.value.code == 2
    assert not dist.is_initialized()


def test_self_training_defaults_are_the_spec_and_configs_override_them():
    """FreeSOLO's self-training (replace the labels, retrain from the initial weights, as long as round 1)
    unless a config's ``self_training`` says otherwise; a typo in it is refused with a suggestion."""
    spec = dict(labels='replace', init='initial', iters=None, split_labels=False, merge_support=None)
    assert self_training_options(Config.fromfile(R50)) == spec
    cfg = Config(dict(self_training=dict(labels='merge', iters=7)))
    assert self_training_options(cfg) == dict(labels='merge', init='initial', iters=7, split_labels=False,
                                              merge_support=None)
    with pytest.raises(InputError, match="self_training: unknown key 'inits'; did you mean 'init'"):
        self_training_options(Config(dict(self_training=dict(inits='previous'))))
