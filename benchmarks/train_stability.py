"""Does a training recipe collapse its masks? Short trainings over several seeds, one setting after another:

    python benchmarks/train_stability.py CONFIG [--seeds 0 1 2] [--iters 200] [--work-dir DIR]
        --setting NAME [KEY=VALUE ...] [--setting NAME [KEY=VALUE ...]]

``CONFIG`` is a training config, for example the round-1 config that ``tools/freesolo_pipeline.py`` writes into its
work dir (``<work-dir>/round1/freesolo_light_demo.py``: the folder's labels and input scales). Each ``--setting``
is a name and the ``--cfg-options`` that make it; every setting trains with every seed
(``randomness.seed``), through ``tools/train.py``, one process at a time.

A collapse is the masks going to all-background (or all-foreground) inside the pseudo labels' boxes: the sigmoids
saturate, their gradients vanish, and the run does not recover. The pairwise loss, which counts label changes
between similar neighbouring pixels inside the boxes, then falls from about 0.1 to below 0.01 while the
max-projection loss rises. A run counts as collapsed when the mean pairwise loss over the second half of its
iterations after the pairwise warm-up is below ``--collapse-below`` (0.03).

The clipping change of 2026-12-02, on held-out (about 2.3 minutes per run on 2 cores)::

    python benchmarks/train_stability.py work_dirs/results/held_out/default/round1/freesolo_light_demo.py \\
        --seeds 0 2 --setting clip35 optim_wrapper.clip_grad.max_norm=35 \\
        --setting clip10 optim_wrapper.clip_grad.max_norm=10
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Tuple

from mmengine.config import Config

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import REPO  # noqa: E402


def read_run(work_dir: str) -> Tuple[List[Dict[str, float]], int]:
    """The training log's scalars (mmengine's ``vis_data/scalars.json``) of the latest run in ``work_dir``, and its
    pairwise warm-up (from the config the run dumped, options applied)."""
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}: see {work_dir}.out')
    with open(paths[-1]) as f:
        rows = [row for row in map(json.loads, f) if 'loss_pairwise' in row]
    cfg = Config.fromfile(osp.join(osp.dirname(paths[-1]), 'config.py'))
    return rows, cfg.model.mask_head.loss_mask_pairwise.get('warmup_iters', 0)


def summarize(rows: List[Dict[str, float]], warmup_iters: int, collapse_below: float) -> Dict[str, float]:
    """Mean pairwise loss over the second half after the warm-up, max-projection loss at the end, peak grad norm."""
    last = rows[-1]['iter']
    start = warmup_iters + (last - warmup_iters) / 2
    late = [r['loss_pairwise'] for r in rows if r['iter'] > start] or [rows[-1]['loss_pairwise']]
    tail = [r['loss_maxproj'] for r in rows if r['iter'] > last - 50]
    pairwise = sum(late) / len(late)
    return dict(
        iters=last,
        pairwise_late=pairwise,
        maxproj_end=sum(tail) / len(tail),
        grad_norm_max=max(r.get('grad_norm', 0.0) for r in rows),
        collapsed=pairwise < collapse_below)


def train(config: str, work_dir: str, iters: int, seed: int, options: List[str]) -> None:
    cmd = [
        sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir', work_dir, '--cfg-options',
        f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000000000', 'default_hooks.logger.interval=5',
        'log_processor.window_size=5', 'default_hooks.checkpoint.interval=1000000000', f'randomness.seed={seed}',
        *options
    ]
    os.makedirs(osp.dirname(work_dir), exist_ok=True)
    with open(work_dir + '.out', 'w') as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode != 0:
            raise SystemExit(f'training failed (seed {seed}, options {options}): see {work_dir}.out')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--setting', nargs='+', action='append', required=True, metavar=('NAME', 'KEY=VALUE'))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--collapse-below', type=float, default=0.03)
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'benchmarks', 'train_stability'))
    args = parser.parse_args()
    print('| setting | seed | iterations | pairwise (late) | max-projection (end) | peak grad norm | collapsed |')
    print('|---|---|---|---|---|---|---|')
    collapses = {}
    for name, *options in args.setting:
        for seed in args.seeds:
            work_dir = osp.join(osp.abspath(args.work_dir), f'{name}_seed{seed}')
            train(osp.abspath(args.config), work_dir, args.iters, seed, options)
            s = summarize(*read_run(work_dir), args.collapse_below)
            collapses[name] = collapses.get(name, 0) + s['collapsed']
            print(f"| {name} | {seed} | {s['iters']} | {s['pairwise_late']:.3f} | {s['maxproj_end']:.3f} | "
                  f"{s['grad_norm_max']:.1f} | {'yes' if s['collapsed'] else 'no'} |", flush=True)
    for name, n in collapses.items():
        print(f'{name}: {n} of {len(args.seeds)} runs collapsed')


if __name__ == '__main__':
    main()
