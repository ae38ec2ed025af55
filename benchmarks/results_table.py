"""The results table: every pipeline setting tried, on demo val and on the held-out benchmark, with
scikit-image's Felzenszwalb beside them. Run by hand from the repository root (one compute job at a time):

    python benchmarks/results_table.py                    # every setting on both benchmarks (hours on CPU)
    python benchmarks/results_table.py --only default     # the settings whose name contains 'default'
    python benchmarks/results_table.py --no-run           # tabulate what earlier runs left

Each (benchmark, setting) is one run of ``tools/freesolo_pipeline.py``, the command users run, in its own
work dir under ``work_dirs/results/``; the pipeline skips the stages that are done, so a rerun only
computes what is missing or stale (wall times are kept from whole runs only: move a work dir aside to time
it again). Demo: trained on ``data/demo/train`` (300 images), scored on demo val
(50 images). Held-out (``tools/make_heldout_data.py``, never used to choose a default): the pipeline runs on
the 60 images and is scored on the same images, as on a user's folder. Scores: pycocotools, class-agnostic
(``useCats = 0``), all masks of every stage (at most 100 per image). Felzenszwalb: every segment of scale
1000 as an instance, scored by solidity (``docs/free_mask_demo.md``).

Writes ``docs/results.md`` (table, commands, wall times), the block between the ``results`` markers of
``README.md`` and ``docs/heldout_results.jpg`` (held-out images: ground truth | the default's masks), and keeps
every run's scores and wall time in ``docs/results.json``, so that a fresh checkout's table still has the runs
that its work dirs do not.
"""
import argparse
import contextlib
import importlib.util
import io
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
from pycocotools.coco import COCO

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from freesolo_mmdet.datasets.demo_scenes import _grid, draw_instances  # noqa: E402
from freesolo_mmdet.datasets.transforms.load_any_image import read_image  # noqa: E402

WORK = osp.join(ROOT, 'work_dirs', 'results')
#: every run's scores per stage and wall time, kept in the repository: the rows of the runs that this checkout's
#: work dirs do not hold (scores as metrics.json has them; the runs tabulated before this file existed have only the
#: table's four columns, the other entries -1)
RECORD = osp.join(ROOT, 'docs', 'results.json')
BENCHMARKS = {
    'demo val': dict(images='data/demo/train', val_images='data/demo/val', val_ann='data/demo/annotations/val.json',
                     make=['tools/make_demo_data.py', '--out', 'data/demo', '--no-progress']),
    'held-out': dict(images='data/heldout/images', val_images='data/heldout/images',
                     val_ann='data/heldout/annotations/gt.json',
                     make=['tools/make_heldout_data.py', '--out', 'data/heldout', '--no-progress']),
}
LR_DECAY = 'configs/demo/freesolo_light_demo_lr_decay.py'
# the default training config without its moving average of the weights: the settings measured before 2026-12-02
LAST = ['--train-config', 'configs/demo/freesolo_light_demo_last_weights.py']
SETTINGS = {
    'default': [],
    # the checkpoints hold the last iteration's weights (the spec), not their moving average: the default before
    'weights not averaged': LAST,
    # the spec's self-training (FreeSOLO): round 2 replaces the labels and retrains from the initial weights
    'FreeSOLO self-training': LAST + ['--labels', 'replace', '--init', 'initial', '--self-training-iters', '600'],
    # the pipeline before 2026-12-01: Free Masks without GrabCut refinement, the configs' input scales
    'no refinement, config scales': LAST + ['--input-scale', 'config', '--free-mask-cfg-options',
                                            'model.refine_iters=None', '--refine-iters', '0', '--train-cfg-options',
                                            'mask_split_components=None', '--labels', 'replace', '--init', 'initial',
                                            '--self-training-iters', '600'],
    # the output masks whole, as before they were split into their connected pieces
    'masks not split': LAST + ['--train-cfg-options', 'mask_split_components=None'],
    '3 rounds': LAST + ['--rounds', '3'],
    'DropLoss 0.01': LAST + ['--train-cfg-options', 'model.mask_head.drop_loss_thr=0.01'],
    'MaskCut pseudo masks': LAST + ['--free-mask-config', 'configs/demo/maskcut_demo.py'],
    # round 1 trains on every Free Mask the demo config writes (down to score 0.5), not only those >= 0.6
    'Free Masks >= 0.5 as labels': LAST + ['--train-cfg-options', 'free_mask_label_thr=0.5'],
    # the lr decayed (cosine) over the second half of each round, then what round 2 trains on
    'lr decay': ['--train-config', LR_DECAY],
    'lr decay, pseudo labels split': ['--train-config', LR_DECAY, '--train-cfg-options',
                                      'self_training.split_labels=True'],
    'lr decay, labels replaced': ['--train-config', LR_DECAY, '--labels', 'replace'],
    'lr decay, labels replaced and split': ['--train-config', LR_DECAY, '--labels', 'replace', '--train-cfg-options',
                                            'self_training.split_labels=True'],
    # round 2 keeps an earlier label only where a round-1 prediction scored >= 0.1 overlaps it
    'earlier labels with support': LAST + ['--train-cfg-options', 'self_training.merge_support=0.1'],
    # every trained model's masks (pseudo labels, final masks, val predictions) average the image and its mirror
    'flip-averaged masks': ['--train-cfg-options', 'mask_flip_average=True'],
    # single runs are noisy: the default and its best-measured variant with more seeds
    'default, seed 1': ['--train-cfg-options', 'randomness.seed=1'],
    'default, seed 2': ['--train-cfg-options', 'randomness.seed=2'],
    'default, seed 3': ['--train-cfg-options', 'randomness.seed=3'],
    'default, seed 4': ['--train-cfg-options', 'randomness.seed=4'],
    'averaged weights, earlier labels with support': ['--train-cfg-options', 'self_training.merge_support=0.1'],
    'averaged weights, earlier labels with support, seed 1': ['--train-cfg-options', 'randomness.seed=1',
                                                              'self_training.merge_support=0.1'],
    'averaged weights, earlier labels with support, seed 2': ['--train-cfg-options', 'randomness.seed=2',
                                                              'self_training.merge_support=0.1'],
    'averaged weights, earlier labels with support, seed 3': ['--train-cfg-options', 'randomness.seed=3',
                                                              'self_training.merge_support=0.1'],
    'averaged weights, earlier labels with support, seed 4': ['--train-cfg-options', 'randomness.seed=4',
                                                              'self_training.merge_support=0.1'],
}
COLUMNS = [('segm', 0, 'mask AP'), ('segm', 1, 'AP50'), ('segm', 8, 'AR100'), ('bbox', 1, 'box AP50')]


def slug(text: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in text).strip('_').lower()


def run_setting(benchmark: dict, args: List[str], work_dir: str, log: str) -> float:
    """One pipeline run (resumes what an earlier one left); returns its wall time in seconds."""
    command = [sys.executable, 'tools/freesolo_pipeline.py', '--images', benchmark['images'], '--work-dir',
               work_dir, '--val-images', benchmark['val_images'], '--val-ann', benchmark['val_ann'], *args]
    start = time.time()
    os.makedirs(osp.dirname(log), exist_ok=True)
    with open(log, 'a') as f:
        f.write('\n$ ' + ' '.join(command) + '\n')
        f.flush()
        subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def load_benchmark_tool():
    spec = importlib.util.spec_from_file_location('options', osp.join(ROOT, 'benchmarks', 'free_mask_demo_options.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def felzenszwalb_row(benchmark: dict) -> Dict[str, List[float]]:
    """Felzenszwalb's stats in the layout of metrics.json (cached next to the runs)."""
    cache = osp.join(WORK, slug(benchmark['val_ann']) + '_felzenszwalb.json')
    if osp.isfile(cache) and os.stat(cache).st_mtime > os.stat(osp.join(ROOT, benchmark['val_ann'])).st_mtime:
        with open(cache) as f:
            return json.load(f)
    from freesolo_mmdet.evaluation.class_agnostic_coco_metric import class_agnostic_cocoeval
    tool = load_benchmark_tool()
    annotations = tool.felzenszwalb_annotations(osp.join(ROOT, benchmark['val_ann']),
                                                osp.join(ROOT, benchmark['val_images']), 1000, 'solidity')
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(osp.join(ROOT, benchmark['val_ann']))
        stats = {iou: class_agnostic_cocoeval(gt, annotations, iou).tolist() for iou in ('segm', 'bbox')}
    with open(cache, 'w') as f:
        json.dump(stats, f)
    return stats


def table(rows: List[tuple]) -> str:
    lines = ['| benchmark | setting | stage | ' + ' | '.join(c[2] for c in COLUMNS) + ' |',
             '|---|---|---|' + '---|' * len(COLUMNS)]
    for benchmark, setting, stage, stats in rows:
        values = ' | '.join(f'{100 * stats[iou][i]:.1f}' for iou, i, _ in COLUMNS)
        lines.append(f'| {benchmark} | {setting} | {stage} | {values} |')
    return '\n'.join(lines)


def draw_comparison(benchmark: dict, masks_file: str, out: str, count: int = 4, score_thr: float = 0.3) -> None:
    """Ground truth above, the run's masks (score >= score_thr) below, for the val images with the most
    objects among the first 4 * count."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt, pred = COCO(osp.join(ROOT, benchmark['val_ann'])), COCO(masks_file)
    by_name = {image['file_name']: image['id'] for image in pred.dataset['images']}
    candidates = sorted(gt.dataset['images'], key=lambda im: im['id'])[:4 * count]
    chosen = sorted(candidates, key=lambda im: -len(gt.imgToAnns[im['id']]))[:count]
    tiles_gt, tiles_pred = [], []
    for image in sorted(chosen, key=lambda im: im['id']):
        rgb = np.ascontiguousarray(read_image(osp.join(ROOT, benchmark['val_images'], image['file_name']))[..., ::-1])
        rows = []
        for coco, image_id, threshold in ((gt, image['id'], None), (pred, by_name.get(image['file_name']), score_thr)):
            anns = [a for a in coco.imgToAnns.get(image_id, []) if threshold is None or a['score'] >= threshold]
            masks = np.stack([mask_util.decode(coco.annToRLE(a)).astype(bool) for a in anns]) if anns else \
                np.zeros((0, *rgb.shape[:2]), bool)
            rows.append(cv2.resize(draw_instances(rgb, masks), (320, 320), interpolation=cv2.INTER_AREA))
        tiles_gt.append(rows[0])
        tiles_pred.append(rows[1])
    for tile, label in ((tiles_gt[0], 'ground truth'), (tiles_pred[0], f'masks, score >= {score_thr}')):
        # on a dark box: a thicker outline stroke would drift right (Hershey glyphs advance by their thickness)
        (width, height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
        cv2.rectangle(tile, (2, 20 - height - 4), (10 + width, 20 + baseline), (0, 0, 0), cv2.FILLED)
        cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(out, _grid(tiles_gt + tiles_pred, columns=count)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])


def replace_block(path: str, text: str, name: str = 'results') -> None:
    start, end = f'<!-- {name}:start -->', f'<!-- {name}:end -->'
    with open(path) as f:
        content = f.read()
    if start not in content or end not in content:
        raise SystemExit(f'{path} has no {start} ... {end} block')
    head, rest = content.split(start, 1)
    with open(path, 'w') as f:
        f.write(head + start + '\n' + text + '\n' + end + rest.split(end, 1)[1])


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', help='run only the settings whose name contains one of these')
    parser.add_argument('--benchmarks', nargs='+', choices=list(BENCHMARKS), default=list(BENCHMARKS),
                        help='run on these only (the table always has every benchmark\'s finished runs)')
    parser.add_argument('--no-run', action='store_true', help='tabulate the finished runs, run nothing')
    args = parser.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    times_file = osp.join(WORK, 'wall_times.json')
    record = dict(stages={}, wall_times={})
    if osp.isfile(RECORD):
        with open(RECORD) as f:
            record = json.load(f)
    times = dict(record['wall_times'])
    if osp.isfile(times_file):
        with open(times_file) as f:
            times.update(json.load(f))
    rows = []
    for bench_name in BENCHMARKS:
        benchmark = BENCHMARKS[bench_name]
        if not osp.isfile(osp.join(ROOT, benchmark['val_ann'])):
            subprocess.run([sys.executable, *benchmark['make']], cwd=ROOT, check=True)
        rows.append((bench_name, 'Felzenszwalb (scale 1000)', '-', felzenszwalb_row(benchmark)))
        for name, extra in SETTINGS.items():
            work_dir = osp.join(WORK, slug(bench_name), slug(name))
            selected = bench_name in args.benchmarks and (not args.only or any(key in name for key in args.only))
            if selected and not args.no_run:
                print(f'[{bench_name}] {name}: running (log: {work_dir}.log)', flush=True)
                resumed = osp.isdir(osp.join(work_dir, '.records'))  # redoes only the stages whose inputs changed
                seconds = run_setting(benchmark, extra, work_dir, work_dir + '.log')
                if resumed:  # the table's times are whole runs: keep the last one
                    print(f'[{bench_name}] {name}: resumed in {seconds / 60:.0f} min; wall time not recorded')
                else:
                    times[f'{bench_name} | {name}'] = seconds
                    with open(times_file, 'w') as f:
                        json.dump(times, f, indent=1)
            metrics, key = osp.join(work_dir, 'metrics.json'), f'{bench_name} | {name}'
            if osp.isfile(metrics):  # this checkout's run
                with open(metrics) as f:
                    record['stages'][key] = json.load(f)
            for stage, stats in record['stages'].get(key, {}).items():  # else the last run on record
                rows.append((bench_name, name, stage, stats))
            if bench_name == 'held-out' and name == 'default' and osp.isfile(osp.join(work_dir, 'masks.json')):
                draw_comparison(benchmark, osp.join(work_dir, 'masks.json'),
                                osp.join(ROOT, 'docs', 'heldout_results.jpg'))
    text = table(rows)
    print(text)
    commands = '\n'.join(f'- {key}: {seconds / 60:.0f} min' for key, seconds in sorted(times.items()))
    with open(osp.join(ROOT, 'docs', 'results.md'), 'w') as f:
        f.write('# Results: every setting tried, on demo val and on the held-out benchmark\n\n'
                'Generated by `python benchmarks/results_table.py` (see its docstring for the protocol). Settings '
                'are arguments of `tools/freesolo_pipeline.py`; "default" is its command without options.\n\n'
                + text + '\n\nSettings (extra arguments of the pipeline; a setting without rows has not run yet):'
                + '\n\n'
                + '\n'.join(f'- {name}: `{" ".join(extra) or "(none)"}`' for name, extra in SETTINGS.items())
                + '\n\nWall time of the last run of each (2 CPU cores):\n\n' + commands + '\n\n'
                'Held-out images, ground truth (top) and the default\'s masks with score >= 0.3 (bottom):\n\n'
                '![held-out results](heldout_results.jpg)\n')
    replace_block(osp.join(ROOT, 'README.md'), text)
    record['wall_times'] = times
    with open(RECORD, 'w') as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write('\n')


if __name__ == '__main__':
    main()
