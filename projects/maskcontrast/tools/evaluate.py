"""K-means and linear-probe mIoU of several feature sources in one command, also of the model at initialisation
(the "before training" baselines). A thin loop over the test runner of ``tools/test.py``:

    python projects/maskcontrast/tools/evaluate.py CONFIG --checkpoint none \
        --sources backbone.0 backbone.1 backbone.2 backbone.cat embedding [--show-dir DIR] [--out results.json]

Each source is one ``runner.test()`` with ``model.test_cfg.feature_source=SOURCE`` (the metrics are the config's
``test_evaluator``); ``--checkpoint none`` initialises the model as training would (pretrained backbone, head
from the config's seed) instead of loading weights. For a single source of a checkpoint this is the same as
``tools/test.py CONFIG CHECKPOINT --cfg-options model.test_cfg.feature_source=SOURCE``.
"""
import argparse
import json
import os.path as osp
import sys
import time
from typing import Optional, Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
if ROOT not in sys.path:  # the config's custom_imports name projects.maskcontrast.maskcontrast
    sys.path.insert(0, ROOT)

from mmdet.engine.hooks.utils import trigger_visualization_hook  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402

import freesolo_mmdet  # noqa: F401,E402  (registers the plugin and the checkpoint-safe globals)
from freesolo_mmdet.apis import build_runner, check_writable, load_config, run_main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate MaskContrast features (K-means, linear probe)')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', required=True, help='a checkpoint, or "none" (the model at initialisation)')
    parser.add_argument('--sources', nargs='+', default=['embedding'],
                        help='feature sources: embedding, backbone.<i>, backbone.cat')
    parser.add_argument('--work-dir', help='where the runs log (default: the config\'s work_dir)')
    parser.add_argument('--show-dir', help='draw the K-means segmentation of the first val images to '
                        'WORK_DIR/TIMESTAMP/SHOW_DIR/SOURCE')
    parser.add_argument('--out', help='json with every source\'s metrics')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'no such checkpoint: {checkpoint}')
    out = check_writable(args.out) if args.out else None
    results = dict(config=args.config, checkpoint=args.checkpoint, sources={})
    for source in args.sources:
        cfg = load_config(args.config, args.cfg_options)
        cfg.model.setdefault('test_cfg', {})['feature_source'] = source
        if args.work_dir:
            cfg.work_dir = args.work_dir
        cfg.load_from = checkpoint
        # loggers and visualisers are per-process singletons keyed by name: one per run
        cfg.experiment_name = f'evaluate_{source}_{time.strftime("%Y%m%d_%H%M%S")}_{time.monotonic_ns()}'
        cfg.visualizer.name = cfg.experiment_name
        if args.show_dir:
            cfg = trigger_visualization_hook(
                cfg, argparse.Namespace(show=False, show_dir=osp.join(args.show_dir, source)))
        runner = build_runner(cfg)
        if checkpoint is None:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            model.init_weights()
        results['sources'][source] = runner.test()
    print(f'\n{"source":<14}{"K-means mIoU":>18}{"probe mIoU":>12}')
    for source, metrics in results['sources'].items():
        kmeans = f'{metrics.get("kmeans/mIoU", float("nan")):.1f} +- {metrics.get("kmeans/mIoU_std", float("nan")):.1f}'
        print(f'{source:<14}{kmeans:>18}{metrics.get("probe/mIoU", float("nan")):>12.1f}')
    if out:
        with open(out, 'w') as f:
            json.dump(results, f, indent=1)
        print(f'wrote {out}')
    return results


if __name__ == '__main__':
    run_main(main)
