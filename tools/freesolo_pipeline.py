"""FreeSOLO from a folder of unlabeled images to instance masks, in one command.

    python tools/freesolo_pipeline.py --images DIR --work-dir W [--val-images DIR --val-ann GT.json]
    python -m torch.distributed.run --nproc_per_node N tools/freesolo_pipeline.py --launcher pytorch ...

Runs Free Mask, trains FreeSOLO on the Free Masks, makes pseudo labels with the trained model, trains
again on them (one round of self-training) and writes ``W/masks.json``, ``W/overlays/`` and
``W/overlays.jpg``; with a val set also ``W/metrics.md``. A rerun skips what is up to date, redoes what changed
(and says why) and resumes what was killed. Paths are relative to the working directory. The work is
:func:`freesolo_mmdet.apis.run_pipeline`; this is its command line.

The defaults are the demo's CPU configs (``configs/demo/``); on GPUs pass
``--free-mask-config configs/free_mask/free_mask_r50_densecl.py --train-config configs/freesolo_r50.py``.
"""
import argparse
import os.path as osp
from typing import List, Optional

from mmengine.config import DictAction

from freesolo_mmdet.apis import init_distributed, run_main, run_pipeline

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', required=True, help='folder of unlabeled images')
    parser.add_argument('--work-dir', required=True, help='where every stage writes its outputs')
    parser.add_argument('--val-images', help='folder of the val images (with --val-ann)')
    parser.add_argument('--val-ann', help='COCO json of the val ground truth: adds the metrics table')
    parser.add_argument('--free-mask-config', default=osp.join(REPO, 'configs/demo/free_mask_demo.py'))
    parser.add_argument('--train-config', default=osp.join(REPO, 'configs/demo/freesolo_light_demo.py'))
    parser.add_argument('--iters', type=int, help="training iterations per round (default: the config's "
                        "train_cfg.max_iters; later rounds: see --self-training-iters)")
    parser.add_argument('--score-thr', type=float, default=0.3, help='pseudo-label score threshold')
    parser.add_argument('--max-per-img', type=int, default=20, help='pseudo labels per image at most')
    parser.add_argument('--rounds', type=int, default=2,
                        help='training rounds: 1 on the Free Masks, then self-training on pseudo labels (default 2)')
    parser.add_argument('--labels', choices=['replace', 'merge', 'merge_confirmed'],
                        help="a self-training round's labels: the previous round's pseudo labels ('replace', "
                        "FreeSOLO) or those plus the earlier labels that none overlaps ('merge', CutLER), or that "
                        "merge on the images where the round found an object only ('merge_confirmed'); default: "
                        "the training config's self_training.labels, else 'replace'")
    parser.add_argument('--init', choices=['initial', 'previous'],
                        help="each round starts from the config's initial weights ('initial', FreeSOLO) or from the "
                        "previous round ('previous', CutLER); default: the training config's self_training.init, "
                        "else 'initial'")
    parser.add_argument('--self-training-iters', type=int,
                        help="training iterations of each round after the first (default: --iters if given, else the "
                        "training config's self_training.iters, else train_cfg.max_iters)")
    parser.add_argument('--input-scale', choices=['auto', 'config'], default='auto',
                        help="'auto': raise both configs' resizes toward the images' median short side (x1 to "
                        "x--max-scale-factor; the choice is logged); 'config': the configs' scales as written")
    parser.add_argument('--max-scale-factor', type=float, default=2.0, help="the largest factor of 'auto'")
    parser.add_argument('--refine-iters', type=int,
                        help="GrabCut iterations refining the trained models' masks on the image's colours (0: off; "
                        "default: the training config's mask_refine_iters, 3 in the demo configs, off in the spec's)")
    parser.add_argument('--overlay-thr', type=float, default=0.3, help='score of the masks drawn on overlays')
    parser.add_argument('--max-overlays', type=int, default=100, help='overlay pictures written at most')
    parser.add_argument('--free-mask-cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override existing keys of the Free Mask config, e.g. free_mask_cfg.chunk_size=100')
    parser.add_argument('--train-cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override existing keys of the training config, e.g. train_dataloader.num_workers=4')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: one process of a torchrun group (sharded inference, DDP training)')
    args = parser.parse_args(argv)
    if bool(args.val_images) != bool(args.val_ann):
        parser.error('--val-images and --val-ann go together')
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.launcher == 'pytorch':
        init_distributed()
    return run_pipeline(args.images, args.work_dir, args.free_mask_config, args.train_config,
                        val_images=args.val_images, val_ann=args.val_ann, iters=args.iters,
                        score_thr=args.score_thr, max_per_img=args.max_per_img, overlay_thr=args.overlay_thr,
                        max_overlays=args.max_overlays, free_mask_cfg_options=args.free_mask_cfg_options,
                        train_cfg_options=args.train_cfg_options, num_rounds=args.rounds, label_mode=args.labels,
                        init=args.init, self_training_iters=args.self_training_iters,
                        input_scale=args.input_scale, max_scale_factor=args.max_scale_factor,
                        refine_iters=args.refine_iters)


if __name__ == '__main__':
    run_main(main)
