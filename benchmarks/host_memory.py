"""Time the pipeline's training in mmengine's Runner with glibc's default host memory handling (A) and with freed
memory kept for reuse (B, ``KeepFreedMemoryHook``, :func:`freesolo_mmdet.utils.keep_freed_host_memory`), switched
every 10 iterations (``runner_ab.py``). Run by hand:

    python benchmarks/host_memory.py --labels work_dirs/demo/labels_round1.json [--images data/demo/train]
        [--iters 200] [--config CONFIG]

The config's own ``KeepFreedMemoryHook`` (if any) is overridden by the switch. Memory kept while B ran stays in the
heap during A's blocks, where small blocks can reuse it; A's large blocks are mmapped afresh, as in a process that
never kept any. Prints the median iteration of each and B / A. The synthetic step of the issue's targets is
``python benchmarks/train_step.py --host-memory keep``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import REPO  # noqa: E402
from runner_ab import alternating_iterations, print_medians  # noqa: E402

import freesolo_mmdet  # noqa: E402,F401 (registers the modules)
from freesolo_mmdet.utils import keep_freed_host_memory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--labels', required=True, help="a Free Mask json, e.g. the pipeline's labels_round1.json")
    parser.add_argument('--images', default=osp.join(REPO, 'data', 'demo', 'train'), help='the images of --labels')
    parser.add_argument('--iters', type=int, default=200, help='training iterations')
    parser.add_argument('--config', default=osp.join(REPO, 'configs', 'demo', 'freesolo_light_demo.py'),
                        help="the training config (default: the demo's)")
    args = parser.parse_args()

    def switch(runner, keep: bool) -> None:
        if not keep_freed_host_memory(keep):
            raise SystemExit('the C library is not glibc: nothing to compare')

    times = alternating_iterations(args.config, args.labels, args.images, args.iters, switch)
    print_medians(times, ('glibc', 'kept'), f'{args.iters} iterations of {args.config} on {args.labels}, host '
                  'memory handling switched every 10')


if __name__ == '__main__':
    main()
