"""Train with MMDetection's runner, the FreeSOLO plugin loaded, on GPUs or (distributed) CPUs.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCESSES [same options]
    bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [same options]

The options are those of mmdet's ``tools/train.py``. The one addition: with ``--launcher pytorch``
on a machine without CUDA (e.g. CI), mmengine's ``init_dist`` would call ``torch.cuda.set_device``
and fail, so this script joins the gloo process group itself and wraps the model in DDP without
``device_ids`` (which DDP rejects for CPU modules). Set ``find_unused_parameters=True`` in the
config if some parameters may get no gradient in a step.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

import freesolo_mmdet  # noqa: F401  (registers the plugin and the checkpoint-safe globals)
from freesolo_mmdet.apis import build_runner, load_config, run_main
from mmdet.utils import setup_cache_size_limit_of_dynamo

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # configs under projects/ import their package (custom_imports) from the repo root
    sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a FreeSOLO / MMDetection model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling the LR')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)  # torch.distributed.launch
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, as mmdet's ``tools/train.py`` does."""
    cfg = load_config(args.config, args.cfg_options)  # a --cfg-options key that names nothing is refused
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    runner = build_runner(cfg)  # also on CPU processes (gloo) under torchrun
    runner.train()


if __name__ == '__main__':
    run_main(main)
