"""Training a FreeSOLO config on one coarse-mask json, in this process (or in each process of a torchrun
group, with DDP), resumable from frequent checkpoints."""
import copy
import gc
import math
import os.path as osp
import time
from typing import Dict, List, Optional, Union

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dist import get_world_size, is_distributed
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .config import InputError, check_keys
from .distributed import setup_cpu_distributed

__all__ = ['retarget_train_dataset', 'stretch_schedulers', 'derive_train_config', 'build_runner', 'train']

#: wrappers of several datasets; the pipeline trains on one image folder, so it keeps their first
MULTI_DATASET_WRAPPERS = ('ConcatDataset', )


def retarget_train_dataset(dataset: dict, ann_file: str, img_dir: str) -> dict:
    """The train dataset config reading ``ann_file`` with images under ``img_dir`` (both made absolute).

    Wrappers with one ``dataset`` (``RepeatDataset``, ``ClassBalancedDataset``, ...) are kept and looked
    through; a ``ConcatDataset`` is replaced by its first dataset (the pipeline has one folder of images),
    whose type, pipeline and filters are kept. ``data_root`` is cleared: the paths are absolute.
    """
    dataset = copy.deepcopy(dataset)
    if dataset.get('type') in MULTI_DATASET_WRAPPERS:
        return retarget_train_dataset(dataset['datasets'][0], ann_file, img_dir)
    if isinstance(dataset.get('dataset'), dict):
        dataset['dataset'] = retarget_train_dataset(dataset['dataset'], ann_file, img_dir)
        return dataset
    dataset.update(data_root='', ann_file=osp.abspath(ann_file),
                   data_prefix=dict(dataset.get('data_prefix') or {}, img=osp.join(osp.abspath(img_dir), '')))
    return dataset


# the self-training of FreeSOLO (spec section 3): each round replaces the labels with the previous
# model's pseudo labels and retrains from the initial weights, as long as round 1
SELF_TRAINING_DEFAULTS = dict(labels='replace', init='initial', iters=None, split_labels=False, merge_support=None)


def self_training_options(cfg: Config) -> Dict[str, object]:
    """``SELF_TRAINING_DEFAULTS`` updated by the training config's ``self_training`` dict.

    Raises:
        InputError: ``self_training`` has a key that nothing reads (a typo).
    """
    options = dict(cfg.get('self_training') or {})
    check_keys(options, SELF_TRAINING_DEFAULTS, 'self_training')
    return {**SELF_TRAINING_DEFAULTS, **options}


def stretch_schedulers(schedulers: Union[dict, List[dict], None], old_iters: int,
                       new_iters: int) -> Union[dict, List[dict], None]:
    """The iteration-based ``param_scheduler`` config(s) of a run of ``old_iters`` iterations, for one
    of ``new_iters``: each scheduler whose ``end`` is ``old_iters`` (it runs to the end of training) has
    its ``begin``, ``end`` and, where given, ``T_max`` and ``milestones`` scaled by ``new_iters / old_iters``
    (rounded); the others (a warm-up) are unchanged, as are epoch-based ones."""
    if schedulers is None or old_iters == new_iters:
        return schedulers
    single = isinstance(schedulers, dict)
    stretched = []
    for scheduler in [schedulers] if single else schedulers:
        scheduler = copy.deepcopy(scheduler)
        if not scheduler.get('by_epoch', True) and scheduler.get('end') == old_iters:
            scale = new_iters / old_iters
            scheduler['begin'] = round(scheduler.get('begin', 0) * scale)
            scheduler['end'] = new_iters
            if scheduler.get('T_max') is not None:
                scheduler['T_max'] = max(1, round(scheduler['T_max'] * scale))
            if scheduler.get('milestones') is not None:
                scheduler['milestones'] = [round(step * scale) for step in scheduler['milestones']]
        stretched.append(scheduler)
    return stretched[0] if single else stretched


def derive_train_config(cfg: Config,
                        ann_file: str,
                        img_dir: str,
                        work_dir: str,
                        max_iters: Optional[int] = None,
                        world_size: Optional[int] = None,
                        checkpoints_per_round: int = 20,
                        load_from: Optional[str] = None) -> Config:
    """A copy of a training config for one pipeline round.

    - The train dataset reads ``ann_file`` and ``img_dir`` (:func:`retarget_train_dataset`).
    - ``max_iters`` iterations if given; no validation during training (the pipeline evaluates after it).
    - The recipe's total batch: ``auto_scale_lr.base_batch_size`` images per iteration over all
      ``world_size`` processes (default: the current process group's), i.e. ``base // world_size`` per
      process, and ``auto_scale_lr`` on, so that the learning rate follows the batch actually used when
      ``base`` does not divide. Without ``auto_scale_lr`` in the config, the config's batch is kept.
    - A checkpoint every ``max_iters / checkpoints_per_round`` iterations (rounded up; the last two kept),
      so a killed run loses at most that share of the round when resumed.
    - The learning-rate schedulers that end at the config's last iteration (a decay to the end) are
      stretched to the round's ``max_iters`` (:func:`stretch_schedulers`); a warm-up keeps its length.

    Raises:
        InputError: the config has no iteration-based ``train_cfg``.
    """
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = osp.abspath(work_dir)
    cfg.train_dataloader.dataset = retarget_train_dataset(cfg.train_dataloader.dataset, ann_file, img_dir)
    if cfg.train_cfg.get('type') != 'IterBasedTrainLoop' and 'max_iters' not in cfg.train_cfg:
        raise InputError('the pipeline trains iteration-based configs (train_cfg.max_iters); '
                         f'got train_cfg={dict(cfg.train_cfg)}')
    if max_iters is not None:
        if cfg.get('param_scheduler') is not None:
            cfg.param_scheduler = stretch_schedulers(cfg.param_scheduler, cfg.train_cfg.max_iters, max_iters)
        cfg.train_cfg.max_iters = max_iters
    iters = cfg.train_cfg.max_iters
    cfg.train_cfg.val_interval = iters + 1
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    world_size = world_size or get_world_size()
    base = (cfg.get('auto_scale_lr') or {}).get('base_batch_size')
    if base:
        cfg.train_dataloader.batch_size = max(1, base // world_size)
        cfg.auto_scale_lr.enable = True
    interval = max(1, math.ceil(iters / checkpoints_per_round))
    cfg.default_hooks.checkpoint = ConfigDict(type='CheckpointHook', by_epoch=False, interval=interval,
                                              max_keep_ckpts=2, save_last=True)
    if load_from is not None:
        cfg.load_from = load_from
    return cfg


def build_runner(cfg: Config) -> Runner:
    """mmengine's Runner for ``cfg`` (``runner_type`` honoured). With ``cfg.launcher == 'pytorch'`` on a
    machine without CUDA the torchrun process group is joined over gloo first and DDP wraps the CPU model
    (:func:`setup_cpu_distributed`); mmengine alone would call ``torch.cuda.set_device``."""
    if cfg.get('launcher') == 'pytorch' and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def train(cfg: Config, resume: bool = True) -> str:
    """Train ``cfg`` in this process (every rank of a torchrun group calls it: DDP); returns the path of
    the final checkpoint.

    With ``resume`` the run continues from the last checkpoint in ``cfg.work_dir`` if there is one.
    """
    cfg = copy.deepcopy(cfg)
    cfg.resume = resume and osp.isfile(osp.join(cfg.work_dir, 'last_checkpoint'))
    if cfg.resume:
        cfg.load_from = None  # mmengine then resumes from work_dir/last_checkpoint
    if is_distributed():
        cfg.launcher = 'pytorch'
    # a unique name per run: loggers and visualizers are per-process singletons keyed by it
    cfg.experiment_name = f'{osp.basename(cfg.work_dir)}_{time.strftime("%Y%m%d_%H%M%S")}_{time.monotonic_ns()}'
    if cfg.get('visualizer'):
        cfg.visualizer.name = cfg.experiment_name  # not an earlier run's instance, which writes elsewhere
    runner = build_runner(cfg)
    runner.train()
    checkpoint = osp.join(cfg.work_dir, f'iter_{runner.iter}.pth')
    del runner
    gc.collect()
    if not osp.isfile(checkpoint):
        raise RuntimeError(f'training ended without its final checkpoint {checkpoint}')
    return checkpoint
