"""FreeSOLO from a folder of unlabeled images to instance masks, in one command.

    python tools/freesolo_pipeline.py --images DIR --work-dir W \
        [--val-images DIR --val-ann GT.json]   # adds the metrics table

Stages, each skipped when its output exists, so a killed run resumes where it stopped
(training resumes from its last checkpoint):

1. ``free_masks``: Free Mask over ``--images`` -> ``W/free_masks.json``.
2. ``round1``: FreeSOLO trained on the Free Masks -> ``W/round1/``.
3. ``pseudo_labels``: the round-1 model's masks on ``--images`` (score >= 0.3, at most 20 per
   image, none wider than 95% of the image) -> ``W/pseudo_labels_round1.json``.
4. ``round2``: FreeSOLO trained again, from the same initial weights, on the pseudo labels -> ``W/round2/``.
5. ``predict``: the final model's masks for every image -> ``W/masks.json`` and ``W/overlays/``.
6. ``metrics`` (with ``--val-images/--val-ann``): class-agnostic mask and box AP/AR of the Free Masks,
   round 1 and round 2 on the val set -> printed, and ``W/metrics.md``/``W/metrics.json``.

The defaults are the demo's CPU configs (``configs/demo/``); on GPUs pass
``--free-mask-config configs/free_mask/free_mask_r50_densecl.py --train-config configs/freesolo_r50.py``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mmengine.utils import ProgressBar
from pycocotools.coco import COCO

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
from freesolo_mmdet.datasets.demo_scenes import draw_instances  # noqa: E402
from freesolo_mmdet.evaluation.class_agnostic_coco_metric import class_agnostic_cocoeval  # noqa: E402
from freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2  # noqa: E402

DEMO_BACKBONE = osp.join('work_dirs', 'pretrained', 'mobilenetv2_imagenet_mmdet.pth')
METRIC_COLUMNS = [('segm', 0, 'mask AP'), ('segm', 1, 'mask AP50'), ('segm', 2, 'mask AP75'),
                  ('segm', 8, 'mask AR100'), ('bbox', 0, 'box AP'), ('bbox', 1, 'box AP50')]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', required=True, help='folder of unlabeled images')
    parser.add_argument('--work-dir', required=True, help='where every stage writes its outputs')
    parser.add_argument('--val-images', help='folder of the val images (with --val-ann)')
    parser.add_argument('--val-ann', help='COCO json of the val ground truth: adds the metrics table')
    parser.add_argument('--free-mask-config', default=osp.join(REPO, 'configs/demo/free_mask_demo.py'))
    parser.add_argument('--train-config', default=osp.join(REPO, 'configs/demo/freesolo_light_demo.py'))
    parser.add_argument('--iters', type=int, help='training iterations per round (default: the config\'s)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='pseudo-label score threshold')
    parser.add_argument('--max-per-img', type=int, default=20, help='pseudo labels per image at most')
    parser.add_argument('--overlay-thr', type=float, default=0.3, help='score of the masks drawn on overlays')
    parser.add_argument('--max-overlays', type=int, default=100, help='overlay pictures written at most')
    args = parser.parse_args(argv)
    if bool(args.val_images) != bool(args.val_ann):
        parser.error('--val-images and --val-ann go together')
    for name in ('images', 'val_images'):
        path = getattr(args, name)
        if path and not osp.isdir(path):
            parser.error(f'--{name.replace("_", "-")}: no such folder: {path}')
    for name in ('val_ann', 'free_mask_config', 'train_config'):
        path = getattr(args, name)
        if path and not osp.isfile(path):
            parser.error(f'--{name.replace("_", "-")}: no such file: {path}')
    return args


def run(cmd: List[str]) -> None:
    """Run a tool of this repository with this interpreter; stop on failure."""
    print('+ ' + ' '.join(cmd), flush=True)
    subprocess.run([sys.executable, *cmd], cwd=REPO, check=True)


def stage(name: str, output: str) -> bool:
    """Whether stage ``name`` still has to run (its output does not exist yet)."""
    if osp.exists(output):
        print(f'[{name}] done already: {output}', flush=True)
        return False
    print(f'\n[{name}] -> {output}', flush=True)
    return True


def last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def count_annotations(coco_file: str) -> int:
    with open(coco_file) as f:
        return len(json.load(f)['annotations'])


def train(args: argparse.Namespace, work_dir: str, ann_file: str) -> str:
    """Train the FreeSOLO config on ``ann_file`` (images under ``--images``); resumable."""
    done = osp.join(work_dir, 'final_checkpoint')
    if osp.exists(done):
        with open(done) as f:
            return f.read().strip()
    os.makedirs(work_dir, exist_ok=True)
    override = osp.join(work_dir, 'pipeline_config.py')
    train_cfg = dict(val_interval=10**9)  # the pipeline evaluates each round itself, after training
    if args.iters:
        train_cfg['max_iters'] = args.iters
    with open(override, 'w') as f:
        f.write(f'_base_ = {osp.abspath(args.train_config)!r}\n'
                f'train_dataloader = dict(dataset=dict(data_root="", ann_file={osp.abspath(ann_file)!r}, '
                f'data_prefix=dict(img={osp.abspath(args.images) + os.sep!r})))\n'
                f'train_cfg = {train_cfg!r}\n'
                'val_dataloader = None\nval_evaluator = None\nval_cfg = None\n')
    resume = ['--resume'] if osp.exists(osp.join(work_dir, 'last_checkpoint')) else []
    run([osp.join('tools', 'train.py'), override, '--work-dir', work_dir, *resume])
    checkpoint = last_checkpoint(work_dir)
    with open(done, 'w') as f:
        f.write(checkpoint)
    return checkpoint


def predict(args: argparse.Namespace, checkpoint: str, out: str, images: Optional[str] = None,
            ann_file: Optional[str] = None, score_thr: float = 0.1, max_per_img: int = 100,
            max_width: float = 1.0, keep_empty: bool = True) -> None:
    """The masks of a trained model on a folder (``images``) or on the val list (``ann_file``)."""
    source = ['--images', images] if images else ['--ann-file', ann_file, '--img-prefix', args.val_images]
    run([osp.join('tools', 'gen_pseudo_labels.py'), args.train_config, checkpoint, *source, '--out', out,
         '--score-thr', str(score_thr), '--max-per-img', str(max_per_img), '--max-width', str(max_width),
         *(['--keep-empty'] if keep_empty else [])])


def free_masks(args: argparse.Namespace, out: str, ann_file: Optional[str] = None) -> None:
    source = ['--images', args.images] if ann_file is None else ['--ann-file', ann_file, '--img-prefix', args.val_images]
    run([osp.join('tools', 'generate_free_masks.py'), args.free_mask_config, *source, '--out', out])


def evaluate(gt: COCO, prediction_file: str) -> Dict[str, List[float]]:
    with open(prediction_file) as f:
        predictions = json.load(f)['annotations']
    return {iou: class_agnostic_cocoeval(gt, predictions, iou).tolist() for iou in ('segm', 'bbox')}


def metrics_table(rows: Dict[str, Dict[str, List[float]]]) -> str:
    head = '| model | ' + ' | '.join(c[2] for c in METRIC_COLUMNS) + ' |'
    lines = [head, '|' + '---|' * (len(METRIC_COLUMNS) + 1)]
    for name, stats in rows.items():
        lines.append(f'| {name} | ' + ' | '.join(f'{100 * stats[iou][i]:.1f}' for iou, i, _ in METRIC_COLUMNS) + ' |')
    return '\n'.join(lines)


def write_overlays(masks_file: str, image_dir: str, out_dir: str, score_thr: float, limit: int) -> None:
    """Pictures of the masks with score >= ``score_thr`` drawn on the first ``limit`` images."""
    coco = COCO(masks_file)
    os.makedirs(out_dir, exist_ok=True)
    images = sorted(coco.dataset['images'], key=lambda im: im['id'])[:limit]
    bar = ProgressBar(len(images))
    for image in images:
        bgr = cv2.imread(osp.join(image_dir, image['file_name']))
        anns = [a for a in coco.imgToAnns[image['id']] if a['score'] >= score_thr]
        masks = np.stack([mask_util.decode(a['segmentation']).astype(bool) for a in anns]) if anns else \
            np.zeros((0, *bgr.shape[:2]), bool)
        drawn = draw_instances(bgr[..., ::-1].copy(), masks, [a['score'] for a in anns])
        cv2.imwrite(osp.join(out_dir, osp.splitext(osp.basename(image['file_name']))[0] + '.jpg'), drawn[..., ::-1])
        bar.update()
    print()


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, List[float]]]:
    args = parse_args(argv)
    start = time.time()
    w = args.work_dir
    os.makedirs(w, exist_ok=True)
    if osp.normpath(DEMO_BACKBONE) in open(args.free_mask_config).read() + open(args.train_config).read() \
            and not osp.exists(osp.join(REPO, DEMO_BACKBONE)):
        convert_deepsort_mobilenetv2(osp.join(REPO, DEMO_BACKBONE))  # offline ImageNet init of the demo configs

    if stage('free_masks', osp.join(w, 'free_masks.json')):
        free_masks(args, osp.join(w, 'free_masks.json'))
    rounds = {}
    rounds['round 1'] = train(args, osp.join(w, 'round1'), osp.join(w, 'free_masks.json'))
    pseudo = osp.join(w, 'pseudo_labels_round1.json')
    if stage('pseudo_labels', pseudo):
        predict(args, rounds['round 1'], pseudo, images=args.images, score_thr=args.score_thr,
                max_per_img=args.max_per_img, max_width=0.95, keep_empty=False)
    if count_annotations(pseudo):
        rounds['round 2'] = train(args, osp.join(w, 'round2'), pseudo)
    else:
        print(f'[round2] skipped: no prediction of the round-1 model reached score {args.score_thr}; '
              'the round-1 model is the final one (train longer: --iters)', flush=True)
    final = list(rounds.values())[-1]
    if stage('predict', osp.join(w, 'masks.json')):
        predict(args, final, osp.join(w, 'masks.json'), images=args.images)
        write_overlays(osp.join(w, 'masks.json'), args.images, osp.join(w, 'overlays'), args.overlay_thr, args.max_overlays)

    table = {}
    if args.val_ann:
        print('\n[metrics] class-agnostic, on ' + args.val_ann, flush=True)
        gt = COCO(args.val_ann)
        val_free = osp.join(w, 'val', 'free_masks.json')
        if stage('val free masks', val_free):
            free_masks(args, val_free, ann_file=args.val_ann)
        table['Free Masks'] = evaluate(gt, val_free)
        for name, checkpoint in rounds.items():
            out = osp.join(w, 'val', name.replace(' ', '') + '.json')
            if stage(f'val {name}', out):
                predict(args, checkpoint, out, ann_file=args.val_ann)
            table[name] = evaluate(gt, out)
        text = metrics_table(table)
        print(text)
        with open(osp.join(w, 'metrics.md'), 'w') as f:
            f.write(text + '\n')
        with open(osp.join(w, 'metrics.json'), 'w') as f:
            json.dump(table, f, indent=1)
    print(f'\nmasks: {osp.join(w, "masks.json")}, overlays: {osp.join(w, "overlays")}; '
          f'{time.time() - start:.0f} s', flush=True)
    return table


if __name__ == '__main__':
    main()
