"""Time the pipeline's training iteration with this checkout's code against a git revision's, in one runner:

    python benchmarks/train_iter_ab.py --baseline REV --swap MODULE:NAME [--swap ...]
        [--labels work_dirs/demo/labels_round1.json] [--images data/demo/train] [--config CONFIG] [--iters 120]

Each ``--swap`` names a function of a module (``MODULE:function``) or a method of one of its classes
(``MODULE:Class.method``). The revision's version is executed from ``git show REV:<module's file>`` (registry
decorators are no-ops there), and the runner switches between it (A, the baseline) and this checkout's (B) every 10
iterations of the pipeline's round-1 training (``runner_ab.alternating_iterations``; the first 2 of each block
are not counted). A module-level function is swapped in its module's namespace: callers that look it up there
see the swap, ``from module import function`` copies do not. Prints the median iterations and B / A.

The pairwise-loss change of 2026-12-01, for example::

    python benchmarks/train_iter_ab.py --baseline d409209 \\
        --swap freesolo_mmdet.models.losses.pairwise_affinity_loss:PairwiseAffinityLoss._window_sums \\
        --swap freesolo_mmdet.models.data_preprocessors.color_similarity:color_similarity
"""
import argparse
import importlib
import os.path as osp
import subprocess
import sys
import types
from typing import Callable, List, Tuple

from mmengine.registry import Registry

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import REPO  # noqa: E402
from runner_ab import alternating_iterations, print_medians  # noqa: E402

import freesolo_mmdet  # noqa: E402,F401 (registers the modules)

TRAIN_CONFIG = osp.join(REPO, 'configs', 'demo', 'freesolo_light_demo.py')


def baseline_module(module_name: str, revision: str) -> types.ModuleType:
    """``module_name`` as it is at git ``revision``, executed as a new module (its registrations are no-ops)."""
    live = importlib.import_module(module_name)
    path = osp.relpath(live.__file__, REPO)
    shown = subprocess.run(['git', '-C', REPO, 'show', f'{revision}:{path}'], capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f'--baseline {revision}: git cannot show {path} there: {shown.stderr.strip()}')
    source = shown.stdout
    module = types.ModuleType(f'{module_name}@{revision}')
    module.__file__ = live.__file__
    register = Registry.register_module
    Registry.register_module = lambda self, *args, **kwargs: (lambda obj: obj)
    try:
        exec(compile(source, f'{path}@{revision}', 'exec'), module.__dict__)
    finally:
        Registry.register_module = register
    return module


def swap_pair(spec: str, revision: str) -> Tuple[object, str, Callable, Callable]:
    """``MODULE:NAME`` -> (the live owner of the attribute, its name, the baseline's value, the live value)."""
    module_name, _, name = spec.partition(':')
    if not name:
        raise SystemExit(f'--swap wants MODULE:function or MODULE:Class.method, got {spec!r}')
    try:
        live = importlib.import_module(module_name)
    except ImportError as error:
        raise SystemExit(f'--swap {spec}: {error}')
    base = baseline_module(module_name, revision)
    *owners, attr = name.split('.')
    try:
        for owner in owners:
            live, base = getattr(live, owner), getattr(base, owner)
        return live, attr, getattr(base, attr), getattr(live, attr)
    except AttributeError as error:
        raise SystemExit(f'--swap {spec}: {error} (in this checkout or at {revision})')


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--baseline', required=True, help='git revision of the baseline (A)')
    parser.add_argument('--swap', action='append', required=True, help='MODULE:function or MODULE:Class.method')
    parser.add_argument('--labels', default=osp.join(REPO, 'work_dirs', 'demo', 'labels_round1.json'),
                        help="a COCO json of --images, such as the pipeline's labels_round1.json")
    parser.add_argument('--images', default=osp.join(REPO, 'data', 'demo', 'train'))
    parser.add_argument('--config', default=TRAIN_CONFIG, help="the training config (default: the demo's)")
    parser.add_argument('--iters', type=int, default=120)
    args = parser.parse_args(argv)
    swaps = [swap_pair(spec, args.baseline) for spec in args.swap]

    def switch(runner, use_b: bool) -> None:
        for owner, attr, base, live in swaps:
            setattr(owner, attr, live if use_b else base)

    try:
        times = alternating_iterations(args.config, args.labels, args.images, args.iters, switch)
    finally:
        switch(None, True)
    print_medians(times, (args.baseline[:9], 'this'), f'{args.iters} iterations of {args.config} on '
                  f'{args.labels}, {len(swaps)} swapped every 10')


if __name__ == '__main__':
    main()
