"""Evaluate a model with MMDetection's runner, the FreeSOLO plugin loaded, on GPUs or (distributed) CPUs.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out preds.pkl] [--show-dir DIR] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [same options]

The options are those of mmdet's ``tools/test.py`` (without ``--show`` and ``--tta``). The FreeSOLO configs
evaluate class-agnostically (``ClassAgnosticCocoMetric``: mask and box AP/AR, pycocotools ``useCats=0``).
As in ``tools/train.py``, with ``--launcher pytorch`` on a machine without CUDA (e.g. CI) this script joins
the gloo process group itself: mmengine's ``init_dist`` would call ``torch.cuda.set_device`` and fail.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

import freesolo_mmdet  # noqa: F401  (registers the plugin and the checkpoint-safe globals)
from freesolo_mmdet.apis import InputError, build_runner, load_config, run_main
from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.utils import setup_cache_size_limit_of_dynamo

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # configs under projects/ import their package (custom_imports) from the repo root
    sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a FreeSOLO / MMDetection model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation log and metrics')
    parser.add_argument('--out', help='dump the predictions to this pickle file for offline evaluation')
    parser.add_argument('--show-dir', help='save images with the predictions drawn to work_dir/TIMESTAMP/DIR')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. test_evaluator.outfile_prefix=results')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)  # torch.distributed.launch
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, as mmdet's ``tools/test.py`` does (a ``--cfg-options`` key
    that names nothing is refused, as in ``tools/train.py``)."""
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'no such checkpoint: {args.checkpoint}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise InputError(f'--out must be a .pkl or .pickle file, got {args.out}')
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show_dir:
        cfg = trigger_visualization_hook(cfg, argparse.Namespace(show=False, show_dir=args.show_dir))
    return cfg


def main(argv=None) -> dict:
    """Runs the test loop; returns its metrics."""
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    runner = build_runner(cfg)  # also on CPU processes (gloo) under torchrun
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    return runner.test()


if __name__ == '__main__':
    run_main(main)
