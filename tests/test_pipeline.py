"""The one-command pipeline (freesolo_mmdet.apis.run_pipeline and tools/freesolo_pipeline.py) on a tiny
demo set: from another folder with relative paths, fresh after changed inputs, resumable after kill -9,
stopped cleanly by SIGTERM, clear errors on bad input, and the same on 2 processes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from freesolo_mmdet.apis import run_main
from freesolo_mmdet.datasets.demo_scenes import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tools'))
import freesolo_pipeline  # noqa: E402

ITERS = ['--iters', '4']


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A finished run, started from a folder that is neither the repository nor the data's, with
    relative paths."""
    root = tmp_path_factory.mktemp('pipeline')
    make_demo_dataset(str(root / 'data'), num_train=6, num_val=3, image_size=96, progress=False)
    (root / 'elsewhere').mkdir()
    argv = ['--images', '../data/train', '--work-dir', 'w', '--val-images', '../data/val',
            '--val-ann', '../data/annotations/val.json', *ITERS]
    cwd = os.getcwd()
    os.chdir(root / 'elsewhere')
    try:
        table = freesolo_pipeline.main(argv)
    finally:
        os.chdir(cwd)
    return root, argv, table


def run_here(root: Path, argv, capsys):
    """``main(argv)`` from ``root/elsewhere``; returns what it printed."""
    cwd = os.getcwd()
    os.chdir(root / 'elsewhere')
    try:
        capsys.readouterr()
        table = freesolo_pipeline.main(argv)
    finally:
        os.chdir(cwd)
    return table, capsys.readouterr().out


#: bracketed lines of the pipeline's output that report, not stages
REPORTS = ('metrics', 'input scales', 'self-training')


def stage_lines(out: str) -> dict:
    """``{stage: 'up to date' | 'running: why' | ...}`` from the pipeline's output (reports left out)."""
    lines = {}
    for line in out.splitlines():
        if line.startswith('[') and '] ' in line and not line.startswith('[ ') and not line.startswith('[>'):
            name, rest = line[1:].split('] ', 1)
            if name not in REPORTS:
                lines[name] = rest
    return lines


def test_relative_paths_from_another_folder(demo):
    root, _, _ = demo
    work = root / 'elsewhere' / 'w'
    masks = COCO(str(work / 'masks.json'))
    names = sorted(os.listdir(root / 'data' / 'train'))
    assert sorted(im['file_name'] for im in masks.dataset['images']) == names
    assert sorted(os.listdir(work / 'overlays')) == [name + '.jpg' for name in names]
    # the first 6 overlays (ids in order) side by side, 4 per row of 240 px high tiles as wide as the images' median
    # aspect ratio makes them: 96 px squares become 240 px ones
    sheet = cv2.imread(str(work / 'overlays.jpg'))
    assert sheet.shape == (480, 960, 3)
    ids = sorted(masks.dataset['images'], key=lambda im: im['id'])
    first = cv2.imread(str(work / 'overlays' / (ids[0]['file_name'] + '.jpg')))
    tile = cv2.resize(first, (240, 240), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(sheet[:240, :240].astype(float) - tile).mean() < 3  # JPEG twice
    assert sheet[240:, 480:].max() < 10  # the last row's two empty tiles are black
    for ann in masks.dataset['annotations']:
        assert len(ann['emb']) == 128
        assert ann['area'] == int(masks.annToMask(ann).sum())
        # the demo config's mask_split_components: every output mask is one 8-connected piece
        assert cv2.connectedComponents(masks.annToMask(ann), connectivity=8)[0] == 2
    # ...applied to the output masks (this tiny run's masks are single pieces anyway), not to the pseudo labels
    records = work / '.records'
    assert json.loads((records / 'predict.json').read_text())['inputs']['split_components'] == 0.1
    assert 'split_components' not in json.loads((records / 'pseudo_labels.json').read_text())['inputs']
    assert not (REPO / 'w').exists() and not (root / 'data' / 'w').exists()  # nothing written elsewhere
    # a checkpoint every 5% of the round (4 iterations: every iteration), the last two kept
    assert sorted(p.name for p in (work / 'round1').glob('iter_*.pth')) == ['iter_3.pth', 'iter_4.pth']


def test_contact_sheet_fits_each_picture_in_its_tile():
    """Pictures keep their aspect ratio, centred in (height, width) tiles, in reading order, black elsewhere."""
    from freesolo_mmdet.apis.pipeline import contact_sheet
    wide = np.full((10, 40, 3), 200, np.uint8)  # fits a (20, 20) tile as 5 x 20, rows 7..12
    tall = np.full((40, 10, 3), 100, np.uint8)  # as 20 x 5, columns 7..12
    sheet = contact_sheet([wide, tall, wide], tile=(20, 20), columns=2)
    assert sheet.shape == (40, 40, 3)
    expected = np.zeros((40, 40, 3), np.uint8)
    expected[7:12, 0:20] = 200
    expected[0:20, 27:32] = 100
    expected[27:32, 0:20] = 200
    assert np.array_equal(sheet, expected)
    # without a tile: 240 px high, the median aspect ratio (4: wide, wide, tall) wide, capped at 480 px
    assert contact_sheet([wide, tall, wide]).shape == (240, 4 * 480, 3)
    assert contact_sheet([tall]).shape == (240, 4 * 120, 3)  # aspect 1/4: at least 120 px
    square = np.zeros((50, 50, 3), np.uint8)
    assert contact_sheet([square, wide[:, :15]]).shape == (240, 4 * 300, 3)  # median of 1 and 1.5: 1.25


def test_metrics_table_equals_pycocotools(demo):
    root, _, table = demo
    work = root / 'elsewhere' / 'w'
    assert list(table)[:2] == ['Free Masks', 'round 1']
    with open(work / 'metrics.json') as f:
        assert json.load(f) == table
    gt = COCO(str(root / 'data' / 'annotations' / 'val.json'))
    with open(work / 'val' / 'free_masks.json') as f:
        free_masks = json.load(f)['annotations']
    detections = gt.loadRes([dict(image_id=a['image_id'], category_id=1, segmentation=a['segmentation'],
                                  score=a['score']) for a in free_masks])
    evaluation = COCOeval(gt, detections, 'segm')
    evaluation.params.useCats = 0
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    np.testing.assert_allclose(table['Free Masks']['segm'], evaluation.stats, atol=1e-12)
    assert (work / 'metrics.md').read_text().count('\n') == 2 + len(table)


def test_rerun_is_fresh_never_stale(demo, capsys):
    """Unchanged: every stage up to date, nothing rewritten. New images: Free Mask and everything after
    it redone, and masks.json lists them. A new --score-thr: only the stages from the pseudo labels on; a new
    --refine-iters: every prediction stage."""
    root, argv, table = demo
    work = root / 'elsewhere' / 'w'
    checkpoint = work / 'round1' / 'iter_4.pth'
    mtime = os.stat(checkpoint).st_mtime_ns
    again, out = run_here(root, argv, capsys)
    assert again == table
    lines = stage_lines(out)
    assert {'free_masks', 'labels_round1', 'round1', 'pseudo_labels', 'predict', 'overlays'} <= set(lines)
    assert all(state == 'up to date' for name, state in lines.items() if name != 'round2'), lines
    assert "[input scales] the images' median short side is 96 px" in out  # the demo configs: x1, logged
    assert os.stat(checkpoint).st_mtime_ns == mtime

    for k in range(2):
        shutil.copy(root / 'data' / 'val' / f'00000{k}.jpg', root / 'data' / 'train' / f'added_{k}.jpg')
    _, out = run_here(root, argv, capsys)
    lines = stage_lines(out)
    assert lines['free_masks'] == 'running: images changed (2 added, 0 removed, 0 modified)'
    assert '[labels_round1] running: free_masks changed' in out  # the Free Masks >= free_mask_label_thr
    assert lines['round1'] == 'running: labels_round1 changed'
    assert lines['predict'].startswith('running: images changed (2 added')
    masks = COCO(str(work / 'masks.json'))
    assert {'added_0.jpg', 'added_1.jpg'} <= {im['file_name'] for im in masks.dataset['images']}
    assert (work / 'overlays' / 'added_1.jpg.jpg').is_file()

    _, out = run_here(root, [*argv, '--score-thr', '0.2'], capsys)
    lines = stage_lines(out)
    assert lines['free_masks'] == lines['round1'] == 'up to date'
    assert lines['pseudo_labels'] == 'running: score_thr 0.3 -> 0.2'

    # the demo config refines the trained models' masks (mask_refine_iters=3); --refine-iters 0 turns it off
    # and redoes every prediction stage, not the training
    _, out = run_here(root, [*argv, '--score-thr', '0.2', '--refine-iters', '0'], capsys)
    lines = stage_lines(out)
    assert lines['free_masks'] == lines['round1'] == 'up to date'
    for stage in ('pseudo_labels', 'predict', 'val round 1'):
        assert lines[stage].startswith('running: refine_iters'), (stage, lines[stage])

    # --max-overlays 0: no pictures and no sheet (the earlier run's removed), and a rerun finds it up to date
    options = [*argv, '--score-thr', '0.2', '--refine-iters', '0', '--max-overlays', '0']
    _, out = run_here(root, options, capsys)
    assert stage_lines(out)['overlays'] == 'running: limit 100 -> 0'
    assert os.listdir(work / 'overlays') == [] and not (work / 'overlays.jpg').exists()
    _, out = run_here(root, options, capsys)
    lines = stage_lines(out)
    assert all(state == 'up to date' for name, state in lines.items() if name != 'round2'), lines


def test_three_rounds_with_merged_labels_from_the_previous_round(demo, capsys):
    """--rounds 3 --labels merge --init previous: round 2 retrains on the round-1 pseudo labels merged with
    the Free Masks, round 3 on round 2's merged with those, each from the previous round's checkpoint."""
    root, argv, _ = demo
    work = root / 'elsewhere' / 'w'
    options = ['--rounds', '3', '--labels', 'merge', '--init', 'previous', '--score-thr', '0',
               '--train-cfg-options', 'model.test_cfg.score_thr=0', 'model.test_cfg.filter_thr=0']  # 4 iterations
    table, out = run_here(root, [*argv, *options], capsys)
    lines = stage_lines(out)
    assert lines['free_masks'] == 'up to date'
    for stage in ('round1', 'labels_round2', 'round2', 'pseudo_labels_round2', 'labels_round3', 'round3'):
        assert f'[{stage}] running' in out, (stage, lines)
    assert list(table) == ['Free Masks', 'round 1', 'round 2', 'round 3']
    pseudo = json.loads((work / 'pseudo_labels_round2.json').read_text())
    merged = json.loads((work / 'labels_round3.json').read_text())
    kept = merged['info']['merged']['old_labels_kept']
    assert len(merged['annotations']) == len(pseudo['annotations']) + kept
    dumped = ''.join(path.read_text() for path in (work / 'round3').glob('*.py'))  # the config mmengine saved
    assert f"load_from = '{work / 'round2' / 'iter_4.pth'}'" in dumped
    again, out = run_here(root, [*argv, *options], capsys)
    assert again == table
    assert all(state == 'up to date' for state in stage_lines(out).values())


def test_self_training_from_the_training_config_and_the_command_line(tmp_path, capsys):
    """A config's ``self_training`` (merge, from the previous round, 3 iterations) sets round 2;
    --self-training-iters overrides its length and reruns round 2 only."""
    make_demo_dataset(str(tmp_path / 'data'), num_train=4, num_val=1, image_size=96, progress=False)
    config = tmp_path / 'train.py'
    config.write_text(f"_base_ = {str(REPO / 'configs' / 'demo' / 'freesolo_light_demo.py')!r}\n"
                      "self_training = dict(labels='merge', init='previous', iters=3)\n")
    work = tmp_path / 'w'
    argv = ['--images', str(tmp_path / 'data' / 'train'), '--work-dir', str(work), '--train-config', str(config),
            '--score-thr', '0', '--train-cfg-options', 'train_cfg.max_iters=2', 'model.test_cfg.score_thr=0',
            'model.test_cfg.filter_thr=0']
    capsys.readouterr()
    freesolo_pipeline.main(argv)
    out = capsys.readouterr().out
    assert '[labels_round2] running' in out
    assert ("[self-training] 1 round(s) after round 1: merged labels (CutLER), from the previous round's weights, "
            '3 iterations each') in out
    assert sorted(p.name for p in (work / 'round1').glob('iter_*.pth')) == ['iter_1.pth', 'iter_2.pth']
    assert sorted(p.name for p in (work / 'round2').glob('iter_*.pth')) == ['iter_2.pth', 'iter_3.pth']
    dumped = ''.join(path.read_text() for path in (work / 'round2').glob('*.py'))
    assert f"load_from = '{work / 'round1' / 'iter_2.pth'}'" in dumped
    # round 1 trains on the Free Masks scored >= the demo config's free_mask_label_thr (0.6), and round 2 merges
    # those in, not the less confident Free Masks that the demo's Free Mask config also writes (down to 0.5)
    free_masks = json.loads((work / 'free_masks.json').read_text())['annotations']
    labels = json.loads((work / 'labels_round1.json').read_text())['annotations']
    scores = sorted(a['score'] for a in free_masks)
    assert scores[0] < 0.6 <= scores[-1], scores  # this data has masks on both sides of the threshold
    assert [a['id'] for a in labels] == [a['id'] for a in free_masks if a['score'] >= 0.6]
    assert f"'{work / 'labels_round1.json'}'" in ''.join(path.read_text() for path in (work / 'round1').glob('*.py'))
    merged = json.loads((work / 'labels_round2.json').read_text())
    counts = {a['segmentation']['counts'] for a in merged['annotations']}
    assert any(a['segmentation']['counts'] in counts for a in labels)  # the merge kept some Free Masks...
    assert not any(a['segmentation']['counts'] in counts for a in free_masks if a['score'] < 0.6)  # ...only these
    freesolo_pipeline.main([*argv, '--self-training-iters', '1'])
    lines = stage_lines(capsys.readouterr().out)
    assert lines['round1'] == 'up to date' and lines['round2'].startswith('running')
    assert (work / 'round2' / 'iter_1.pth').is_file()
    # --labels merge_confirmed: the same merge, minus the images without a pseudo label; redoes the merge
    freesolo_pipeline.main([*argv, '--self-training-iters', '1', '--labels', 'merge_confirmed'])
    out = capsys.readouterr().out
    assert 'merged labels (CutLER) on the images where the round found an object' in out
    assert "[labels_round2] running: unlisted_images 'keep' -> 'drop'" in out
    lines = stage_lines(out)
    assert lines['round1'] == 'up to date' and lines['round2'].startswith('running')
    assert json.loads((work / 'labels_round2.json').read_text())['info']['merged']['unlisted_images'] == 'drop'
    # self_training.split_labels: the pseudo labels are split into their connected pieces as the outputs are; only
    # the pipeline reads self_training, so round 1 is not retrained
    unsplit = json.loads((work / 'pseudo_labels_round1.json').read_text())
    freesolo_pipeline.main([*argv, 'self_training.split_labels=True', '--self-training-iters', '1', '--labels',
                            'merge_confirmed'])
    lines = stage_lines(capsys.readouterr().out)
    assert lines['round1'] == 'up to date' and lines['pseudo_labels'].startswith('running')
    split = json.loads((work / 'pseudo_labels_round1.json').read_text())
    assert_split_into_pieces(unsplit, split, min_fraction=0.1)  # the demo config's mask_split_components
    code, err = exit_of([*argv, 'self_training.split_labels=True', 'mask_split_components=None'], capsys)
    assert code == 2 and 'the training config has no mask_split_components' in err
    # self_training.merge_support: the merge keeps an earlier label only where one of the round-1 model's predictions
    # scored at least that (support_round1.json) overlaps it with IoU >= 0.5; this short training scores below 0.1
    freesolo_pipeline.main([*argv, 'self_training.merge_support=0.001', '--self-training-iters', '1', '--labels',
                            'merge_confirmed'])
    out = capsys.readouterr().out
    assert '(earlier labels only where a prediction scored >= 0.001 overlaps them)' in out
    lines = stage_lines(out)
    assert lines['round1'] == 'up to date' and lines['support_round1'].startswith('running')
    assert '[labels_round2] running' in out and lines['round2'].startswith('running')
    support = json.loads((work / 'support_round1.json').read_text())
    merged = json.loads((work / 'labels_round2.json').read_text())
    pseudo = {a['segmentation']['counts'] for a in json.loads((work / 'pseudo_labels_round1.json').read_text())[
        'annotations']}
    support_of = best_iou_in_other_file(labels, support, json.loads((work / 'labels_round1.json').read_text()))
    kept = [a for a in merged['annotations'] if a['segmentation']['counts'] not in pseudo]  # here the pseudo labels
    assert all(support_of[a['segmentation']['counts']] >= 0.5 for a in kept)  # (score >= 0) may cover them all
    assert merged['info']['merged']['old_labels_unsupported'] == sum(iou < 0.5 for iou in support_of.values()) > 0
    assert support['annotations'] and min(a['score'] for a in support['annotations']) >= 0.001
    code, err = exit_of([*argv, 'self_training.merge_support=True'], capsys)
    assert code == 2 and 'self_training.merge_support must be a score or None, got True' in err
    # mask_flip_average: every trained model's masks average the image and its mirror; round 1 is not retrained
    freesolo_pipeline.main([*argv, 'mask_flip_average=True', '--self-training-iters', '1', '--labels',
                            'merge_confirmed'])
    out = capsys.readouterr().out
    assert 'average each image and its mirror image (mask_flip_average)' in out
    lines = stage_lines(out)
    assert lines['round1'] == 'up to date'
    for stage in ('pseudo_labels', 'predict', 'round2'):
        assert lines[stage].startswith('running'), (stage, lines[stage])
    assert lines['pseudo_labels'] == 'running: flip None -> True', lines['pseudo_labels']
    code, err = exit_of([*argv, 'mask_flip_average=1'], capsys)
    assert code == 2 and 'mask_flip_average must be True or False, got 1' in err


def best_iou_in_other_file(annotations: list, other: dict, own: dict) -> dict:
    """``{RLE counts: highest mask IoU with the masks of ``other`` in the same image (matched by file name)}`` of
    ``annotations``, listed in the COCO dict ``own``."""
    from pycocotools import mask as mask_utils
    names = {image['id']: image['file_name'] for image in own['images']}
    other_names = {image['id']: image['file_name'] for image in other['images']}
    by_file = {}
    for ann in other['annotations']:
        by_file.setdefault(other_names[ann['image_id']], []).append(ann['segmentation'])
    best = {}
    for ann in annotations:
        others = by_file.get(names[ann['image_id']], [])
        ious = mask_utils.iou([ann['segmentation']], others, [0] * len(others)) if others else [[0.0]]
        best[ann['segmentation']['counts']] = float(max(ious[0]))
    return best


def assert_split_into_pieces(unsplit: dict, split: dict, min_fraction: float) -> None:
    """Each mask of ``unsplit`` became its 8-connected pieces of at least ``min_fraction`` of its largest in
    ``split``, with its score; at least one of them has more than one piece."""
    from pycocotools import mask as mask_utils
    pieces_of = {}
    for ann in split['annotations']:
        pieces_of.setdefault(ann['image_id'], []).append(ann)
    more = 0
    for image in unsplit['images']:
        expected = []
        for ann in [a for a in unsplit['annotations'] if a['image_id'] == image['id']]:
            mask = mask_utils.decode(ann['segmentation'])
            count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            areas = stats[1:, cv2.CC_STAT_AREA]
            kept = [k + 1 for k in range(count - 1) if areas[k] >= min_fraction * areas.max()]
            expected += [(ann['score'], int((labels == k).sum())) for k in kept]
            more += len(kept) > 1
        got = [(ann['score'], ann['area']) for ann in pieces_of.get(image['id'], [])]
        assert sorted(got) == sorted(expected), image['file_name']
    assert more > 0, 'no mask of this data has two pieces: the check cannot fail'


def write_demo(root: Path, num_train: int = 6) -> Path:
    make_demo_dataset(str(root / 'data'), num_train=num_train, num_val=1, image_size=96, progress=False)
    return root / 'data' / 'train'


def pipeline_command(images, work_dir, *extra):
    return [sys.executable, str(REPO / 'tools' / 'freesolo_pipeline.py'), '--images', str(images),
            '--work-dir', str(work_dir), *extra]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - start < timeout, f'{path} did not appear'
        time.sleep(0.2)


def processes_naming(path: Path, wait: float = 3) -> list:
    """Command lines of the processes that mention ``path`` (data loader workers have their parent's),
    once they have had ``wait`` seconds to end."""
    time.sleep(wait)
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            cmdline = Path(f'/proc/{pid}/cmdline').read_bytes().decode(errors='replace')
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline.replace('\0', ' '))
    return found


def test_kill_9_resumes_training_from_its_last_checkpoint(tmp_path):
    images = write_demo(tmp_path)
    work = tmp_path / 'w'
    command = pipeline_command(images, work, '--iters', '20',  # a checkpoint every iteration (5%)
                               '--train-cfg-options', 'default_hooks.logger.interval=1')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(work / 'round1' / 'iter_4.pth', proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert processes_naming(work) == []  # its data loader workers ended with it
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    lines = stage_lines(rerun.stdout)
    assert lines['free_masks'] == 'up to date'
    assert lines['round1'] == 'resuming: unfinished'
    log = (rerun.stdout + rerun.stderr).split('[pseudo_labels]')[0]  # round 1's part
    resumed_at = int(log.split('resumed epoch: ')[1].split('iter: ')[1].split()[0].rstrip(','))
    # iter_4.pth may have been half-written when killed: then last_checkpoint still names iter_3.pth;
    # either way at most one checkpoint interval (5% of the round, 1 iteration) is lost
    assert resumed_at >= 3
    assert 'Iter(train) [ 1/20]' not in log and f'Iter(train) [{resumed_at + 1:2d}/20]' in log
    assert (work / 'masks.json').is_file()


def test_sigterm_stops_the_pipeline_and_its_workers(tmp_path):
    images = write_demo(tmp_path)
    work = tmp_path / 'w'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(pipeline_command(images, work, '--iters', '40'), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(work / 'round1' / 'iter_2.pth', proc)  # a checkpoint every 2 of 40 iterations: training
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 'stopped by SIGTERM; rerun the same command to resume' in out
    assert processes_naming(work) == []


def exit_of(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(freesolo_pipeline.main, argv)
    return exit_info.value.code, capsys.readouterr().err


def test_bad_inputs_end_in_one_line_and_exit_2(tmp_path, capsys):
    images = write_demo(tmp_path, num_train=2)
    (tmp_path / 'empty').mkdir()
    cases = [
        (['--images', str(tmp_path / 'empty'), '--work-dir', str(tmp_path / 'w1')], 'no file in'),
        (['--images', '/no/such/folder', '--work-dir', str(tmp_path / 'w2')], 'no such folder'),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w3'), '--train-cfg-options',
          'train_cfg.max_iter=3'], "'max_iter' is not a key of train_cfg; did you mean 'max_iters'?"),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w4'), '--free-mask-cfg-options',
          'free_mask_cfg.chunk_sise=3'], "'chunk_sise' is not a key of free_mask_cfg; did you mean 'chunk_size'?"),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w5'), '--train-cfg-options', 'max_iterz=3'],
         "'max_iterz' is not a key of the config"),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w6'), '--free-mask-cfg-options',
          'model.min_score=1.01'], 'Free Mask found no mask on any of the 2 files'),
        (['--images', str(images), '--work-dir', str(images / '000000.jpg' / 'w')], 'cannot write'),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w8'), '--self-training-iters', '0'],
         '--self-training-iters must be at least 1, got 0'),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w9'), '--train-cfg-options',
          'self_training.lables=merge'], "'lables' is not a key of self_training; did you mean 'labels'?"),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w10'), '--train-cfg-options',
          'free_mask_label_thr=high'], "free_mask_label_thr must be a score or None, got 'high'"),
        (['--images', str(images), '--work-dir', str(tmp_path / 'w11'), '--train-cfg-options',
          'free_mask_label_thr=1.01'], 'no Free Mask scored free_mask_label_thr = 1.01 or more'),
    ]
    for argv, message in cases:
        code, err = exit_of(argv, capsys)
        assert code == 2, (argv, err)
        # (in-process, mmengine's loggers of earlier tests may add noise to the captured stderr)
        errors = [line for line in err.splitlines() if line.startswith('error: ')]
        assert len(errors) == 1 and message in errors[0], (argv, err)
    # as a command: exactly one line on stderr, no traceback
    proc = subprocess.run(pipeline_command(images, tmp_path / 'w7', '--free-mask-cfg-options', 'model.min_score=1.01'),
                          env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore::UserWarning'),
                          capture_output=True, text=True, timeout=300)  # (setuptools' pkg_resources warning)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith('error: Free Mask found no mask on any of the 2 files')
    code, err = exit_of(['--images', str(images), '--work-dir', 'w', '--val-ann', 'x.json'], capsys)
    assert code == 2 and 'go together' in err  # argparse


def test_typo_in_a_config_files_free_mask_cfg_is_refused(tmp_path, capsys):
    images = write_demo(tmp_path, num_train=2)
    config = tmp_path / 'free_mask.py'
    config.write_text(f"_base_ = {str(REPO / 'configs' / 'demo' / 'free_mask_demo.py')!r}\n"
                      "free_mask_cfg = dict(batchsize=2)\n")
    code, err = exit_of(['--images', str(images), '--work-dir', str(tmp_path / 'w'), '--free-mask-config',
                         str(config)], capsys)
    assert code == 2 and "free_mask_cfg: unknown key 'batchsize'; did you mean 'batch_size'?" in err
    assert not (tmp_path / 'w' / 'free_masks.json.parts').exists()


def test_two_processes_equal_one(tmp_path):
    """torchrun, 2 gloo processes: Free Masks byte-identical to one process's (chunks of 2 images shared
    between the ranks); training in DDP; every image in masks.json."""
    images = write_demo(tmp_path, num_train=6)
    options = ['--iters', '2', '--free-mask-cfg-options', 'free_mask_cfg.chunk_size=2']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    single = subprocess.run(pipeline_command(images, tmp_path / 'one', *options), env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    dist = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                           '--master_port', str(29500 + os.getpid() % 1000),
                           *pipeline_command(images, tmp_path / 'two', *options, '--launcher', 'pytorch')[1:]],
                          env=env, capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stdout[-3000:] + dist.stderr[-3000:]
    assert (tmp_path / 'two' / 'free_masks.json').read_bytes() == (tmp_path / 'one' / 'free_masks.json').read_bytes()
    from mmengine.config import Config
    config = Config.fromfile(str(tmp_path / 'two' / 'round1' / 'freesolo_light_demo.py'))
    assert config.train_dataloader.batch_size == 2  # the recipe's 4 images per iteration over 2 processes
    assert config.auto_scale_lr.enable and config.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    one = Config.fromfile(str(tmp_path / 'one' / 'round1' / 'freesolo_light_demo.py'))
    assert one.train_dataloader.batch_size == 4 and one.get('model_wrapper_cfg') is None
    names = sorted(os.listdir(images))
    for run in ('one', 'two'):
        masks = json.loads((tmp_path / run / 'masks.json').read_text())
        assert sorted(im['file_name'] for im in masks['images']) == names
