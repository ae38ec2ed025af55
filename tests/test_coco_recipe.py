"""The README's COCO recipe, every command as written, on a miniature COCO tree (tools/make_mini_coco.py).

The commands are read from the bash block of the README section below and run in order in a temporary folder
with ``configs`` and ``tools`` linked to the repository's. Only the overrides that the README's paragraph "How
the test shrinks this recipe" lists are appended (see :func:`shrink`).
"""
import importlib.util
import json
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from freesolo_mmdet.apis import InputError
from freesolo_mmdet.datasets.mini_coco import COCO_CATEGORY_IDS, KIND_TO_CATEGORY, make_mini_coco
from mmdet.datasets import CocoDataset
from mmdet.models.backbones import ResNet

REPO = Path(__file__).resolve().parents[1]
SECTION = '## Reproducing FreeSOLO on COCO (8 GPUs)'
NUM_TRAIN, NUM_UNLABELED, NUM_VAL = 10, 4, 4
SIZE = '(160,96)'  # (long, short) side of the resized images
STAT_NAMES = ('AP', 'AP50', 'AP75', 'AP_S', 'AP_M', 'AP_L', 'AR1', 'AR10', 'AR100', 'AR_S', 'AR_M', 'AR_L')
PSEUDO_LABELS = 'data/coco/annotations/pseudo_labels_round1.json'
PREDICTIONS = 'work_dirs/val2017_predictions.pkl'


def readme_commands() -> List[str]:
    """The commands of the bash block of the README's COCO section, continuation lines joined."""
    section = (REPO / 'README.md').read_text().split(SECTION, 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    commands, current = [], ''
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith('#')):
            continue
        current += line.strip().rstrip('\\').strip() + ' '
        if not line.rstrip().endswith('\\'):
            commands.append(current.strip())
            current = ''
    assert not current, f'unfinished command: {current}'
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def on_two_processes(command: str) -> str:
    """The README's 8 GPUs -> 2 processes (the one argument ``8`` of a dist_*.sh command)."""
    assert len(re.findall(r'(?<=\s)8(?=\s|$)', command)) == 1, command
    return re.sub(r'(?<=\s)8(?=\s|$)', '2', command)


def cfg_options(*options: str) -> str:
    return " --cfg-options " + ' '.join(f"'{option}'" for option in options)


def shrink(command: str, init_ckpt: str) -> Optional[str]:
    """The README command with the test's overrides appended; None: skip it (the reason is printed)."""
    densecl = f'model.backbone.init_cfg.checkpoint={init_ckpt}'
    test_size = (f'val_dataloader.dataset.pipeline.1.scale={SIZE}',
                 f'test_dataloader.dataset.pipeline.1.scale={SIZE}')
    no_thresholds = ('model.test_cfg.score_thr=0', 'model.test_cfg.filter_thr=0')
    if command.startswith(('mim train mmpretrain', 'python tools/export_backbone.py')):
        if not _imports('torchvision'):
            print(f'skipped (torchvision cannot be imported; DenseCL pre-training needs it): {command}')
        else:
            print(f'skipped (DenseCL pre-training needs ImageNet and GPUs): {command}')
        return None
    if command.startswith('mkdir') or command.startswith('python tools/split_coco.py'):
        return command
    if command.startswith('bash tools/dist_generate_free_masks.sh'):
        return on_two_processes(command) + cfg_options(densecl, f'test_pipeline.1.scale={SIZE}')
    if command.startswith('bash tools/dist_train.sh configs/freesolo_r50.py'):
        return on_two_processes(command) + cfg_options(
            densecl, 'train_cfg.max_iters=2', f'train_dataloader.dataset.pipeline.2.scales=[{SIZE}]', *test_size)
    if command.startswith('python tools/gen_pseudo_labels.py'):
        # a 2-iteration model's masks are noise, and with a random seed they may all be below mask_thr or
        # wider than --max-width; mask_thr 0 (every mask is the image) and --max-width 1 keep labels for round 2
        return command + ' --score-thr 0 --max-width 1' + cfg_options(test_size[1], *no_thresholds,
                                                                      'model.test_cfg.mask_thr=0')
    if command.startswith('bash tools/dist_test.sh'):
        return on_two_processes(command) + f' --out {PREDICTIONS}' + cfg_options(test_size[1], *no_thresholds)
    if command.startswith('bash tools/dist_train.sh configs/finetune/'):
        options = ['model.backbone.norm_cfg.type=BN', 'train_cfg.max_epochs=1',
                   f'train_dataloader.dataset.pipeline.2.scale={SIZE}', *test_size]
        if 'densecl' in command:
            options.insert(0, densecl)
        return on_two_processes(command) + cfg_options(*options)
    raise AssertionError(f'a README command that the test does not know how to shrink: {command}')


def _imports(module: str) -> bool:
    return subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True).returncode == 0


def write_random_densecl(path: Path) -> None:
    """A random-init ResNet-50 (mmdet's ResNet init: Kaiming convs, zero last BN of each block) in the key
    format of OpenMMLab's DenseCL checkpoint (``backbone.``-prefixed)."""
    torch.manual_seed(0)
    backbone = ResNet(depth=50)
    for name, module in backbone.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(module, torch.nn.BatchNorm2d) and name.endswith('bn3'):
            torch.nn.init.zeros_(module.weight)
    state = {f'backbone.{key}': value for key, value in backbone.state_dict().items()}
    torch.save(dict(state_dict=state, meta=dict(note='random init, DenseCL key format')), path)


def parse_printed_ap(output: str) -> dict:
    """The last ``agnostic/{segm,bbox}_<stat>: value`` line that the test loop logged."""
    lines = [line for line in output.splitlines() if 'Iter(test)' in line and 'agnostic/segm_AP:' in line]
    assert lines, output[-3000:]
    values = dict(re.findall(r'agnostic/((?:segm|bbox)_\w+): (-?\d+\.\d+)', lines[-1]))
    return {key: float(value) for key, value in values.items()}


def pycocotools_ap(gt_file: Path, predictions: list, iou_type: str) -> np.ndarray:
    """The 12 COCO stats of the dumped predictions, every category as one (``useCats = 0``), boxes from masks."""
    coco_gt = COCO(str(gt_file))
    results = []
    for pred in predictions:
        instances = pred['pred_instances']
        for rle, score in zip(instances['masks'], instances['scores'].tolist()):
            result = dict(image_id=pred['img_id'], category_id=1, score=score)
            if iou_type == 'segm':
                result['segmentation'] = rle
            else:
                result['bbox'] = mask_utils.toBbox(rle).tolist()
            results.append(result)
    assert results, 'the evaluation predicted nothing'
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    coco_eval.params.useCats = 0
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval.stats


@pytest.mark.recipe
def test_readme_coco_recipe(tmp_path):
    start = time.perf_counter()
    for name in ('configs', 'tools'):
        (tmp_path / name).symlink_to(REPO / name)
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable, PATH=f'{bin_dir}:{os.environ["PATH"]}',
               CUDA_VISIBLE_DEVICES='')
    subprocess.run([sys.executable, str(REPO / 'tools' / 'make_mini_coco.py'), '--out', 'data/coco', '--num-train',
                    str(NUM_TRAIN), '--num-unlabeled', str(NUM_UNLABELED), '--num-val', str(NUM_VAL), '--size', '128'],
                   cwd=tmp_path, env=env, check=True)
    write_random_densecl(tmp_path / 'densecl_random.pth')
    outputs, logs = {}, tmp_path / 'logs'
    logs.mkdir()
    try:
        for i, command in enumerate(readme_commands()):
            shrunk = shrink(command, 'densecl_random.pth')
            if shrunk is None:
                continue
            began = time.perf_counter()
            proc = subprocess.run(['bash', '-c', shrunk], cwd=tmp_path, env=dict(env, PORT=str(free_port())),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            print(f'[{time.perf_counter() - began:5.0f} s] {shrunk}')
            (logs / f'{i:02d}.log').write_text(f'{shrunk}\n{proc.stdout}')  # for a failed run
            assert proc.returncode == 0, f'{shrunk}\n{proc.stdout[-8000:]}'
            outputs[command] = proc.stdout
        check_results(tmp_path, outputs)
    finally:
        for checkpoint in [tmp_path / 'densecl_random.pth', *(tmp_path / 'work_dirs').rglob('*.pth')]:
            checkpoint.unlink(missing_ok=True)  # 95 MB, and ~370 MB each trained one
    print(f'the recipe took {time.perf_counter() - start:.0f} s')


def output_of(outputs: dict, prefix: str) -> str:
    found = [text for command, text in outputs.items() if command.startswith(prefix)]
    assert len(found) == 1, (prefix, list(outputs))
    return found[0]


def check_results(root: Path, outputs: dict) -> None:
    ann_dir = root / 'data' / 'coco' / 'annotations'
    # 1. one Free Mask json over train2017 + unlabeled2017
    free_masks = json.loads((ann_dir / 'free_masks_train.json').read_text())
    folders = {image['file_name'].split('/')[0] for image in free_masks['images']}
    assert folders == {'train2017', 'unlabeled2017'}, folders
    assert free_masks['annotations']
    # 2./3. both rounds trained and saved; round 2 on the pseudo labels
    for work_dir in ('freesolo_r50', 'freesolo_r50_round2'):
        last = Path((root / 'work_dirs' / work_dir / 'last_checkpoint').read_text().strip())
        assert last.name == 'iter_2.pth' and last.is_file(), last
    pseudo_labels = json.loads((root / PSEUDO_LABELS).read_text())
    assert pseudo_labels['images'] and pseudo_labels['annotations']
    round2 = Config.fromfile(str(root / 'work_dirs' / 'freesolo_r50_round2' / 'freesolo_r50.py'))
    assert round2.train_dataloader.dataset.type == 'CoarseMaskCocoDataset'
    assert round2.train_dataloader.dataset.ann_file == 'annotations/pseudo_labels_round1.json'
    round2_log = output_of(outputs, 'bash tools/dist_train.sh configs/freesolo_r50.py 8 --work-dir')
    assert 'Saving checkpoint at 2 iterations' in round2_log
    # 4. the printed class-agnostic AP equals pycocotools' on the dumped predictions
    printed = parse_printed_ap(output_of(outputs, 'bash tools/dist_test.sh'))
    assert len(printed) == 2 * len(STAT_NAMES), printed
    with open(root / PREDICTIONS, 'rb') as f:
        predictions = pickle.load(f)
    assert sorted(pred['img_id'] for pred in predictions) == list(
        range(NUM_TRAIN + NUM_UNLABELED + 1, NUM_TRAIN + NUM_UNLABELED + NUM_VAL + 1))
    for iou_type in ('segm', 'bbox'):
        expected = pycocotools_ap(ann_dir / 'instances_val2017.json', predictions, iou_type)
        for name, value in zip(STAT_NAMES, expected):
            assert value == -1 or 0 <= value <= 1
            assert printed[f'{iou_type}_{name}'] == pytest.approx(value, abs=1e-4), (iou_type, name)
    # 5. the 5% split and the fine-tuning runs, the FreeSOLO one loaded from the round-2 checkpoint
    split = json.loads((ann_dir / 'semi_anns' / 'instances_train2017.1@5.json').read_text())
    assert len(split['images']) == math.floor(5 * NUM_TRAIN / 100 + 0.5)  # split_coco rounds half up
    round2_ckpt = (root / 'work_dirs' / 'freesolo_r50_round2' / 'last_checkpoint').read_text().strip()
    finetune_log = output_of(outputs, 'bash tools/dist_train.sh configs/finetune/solov2_r50_fpn_coco-5pct_freesolo')
    assert f'Load checkpoint from {round2_ckpt}' in finetune_log
    assert 'size mismatch for mask_head.conv_cls.weight' in finetune_log  # FreeSOLO's one class, skipped
    densecl_log = output_of(outputs, 'bash tools/dist_train.sh configs/finetune/solov2_r50_fpn_coco-5pct_densecl')
    assert 'load backbone. in model from: densecl_random.pth' in densecl_log
    for name in ('solov2_r50_fpn_coco-5pct_freesolo', 'solov2_r50_fpn_coco-5pct_densecl'):
        work_dir = root / 'work_dirs' / name
        assert (work_dir / 'epoch_1.pth').is_file()
        cfg = Config.fromfile(str(work_dir / f'{name}.py'))
        assert cfg.train_dataloader.dataset.ann_file == 'annotations/semi_anns/instances_train2017.1@5.json'


def test_make_mini_coco_layout(tmp_path):
    """COCO's folders, file names, unique image ids and 80 category ids; exact RLE areas and tight boxes."""
    result = make_mini_coco(str(tmp_path / 'a'), num_train=3, num_unlabeled=2, num_val=2, image_size=96, seed=1)
    root = tmp_path / 'a'
    assert sorted(p.name for p in (root / 'annotations').iterdir()) == [
        'image_info_unlabeled2017.json', 'instances_train2017.json', 'instances_val2017.json']
    names = {folder: sorted(p.name for p in (root / folder).iterdir())
             for folder in ('train2017', 'unlabeled2017', 'val2017')}
    assert names == dict(train2017=[f'{i:012d}.jpg' for i in (1, 2, 3)],
                         unlabeled2017=[f'{i:012d}.jpg' for i in (4, 5)],
                         val2017=[f'{i:012d}.jpg' for i in (6, 7)])
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[-1] == 90
    categories = json.loads(Path(result['files']['train2017']).read_text())['categories']
    used = {cat['id']: cat['name'] for cat in categories}
    assert list(used.values()) == list(CocoDataset.METAINFO['classes']) and used[1] == 'person'
    for folder, count in (('train2017', 3), ('val2017', 2)):
        coco = COCO(str(root / 'annotations' / f'instances_{folder}.json'))
        assert sorted(image['file_name'] for image in coco.dataset['images']) == names[folder]
        assert result[folder] == dict(num_images=count, num_instances=len(coco.dataset['annotations']))
        names_by_id = {cat['id']: cat['name'] for cat in coco.dataset['categories']}
        for ann in coco.dataset['annotations']:
            mask = coco.annToMask(ann)
            rows, cols = np.nonzero(mask)
            assert ann['area'] == mask.sum() > 0 and ann['iscrowd'] == 0
            assert ann['bbox'] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
            assert names_by_id[ann['category_id']] in KIND_TO_CATEGORY.values()
    unlabeled = json.loads((root / 'annotations' / 'image_info_unlabeled2017.json').read_text())
    assert 'annotations' not in unlabeled and len(unlabeled['images']) == 2
    make_mini_coco(str(tmp_path / 'b'), num_train=3, num_unlabeled=2, num_val=2, image_size=96, seed=1)
    for path in (root / 'annotations').iterdir():  # deterministic by seed
        assert path.read_bytes() == (tmp_path / 'b' / 'annotations' / path.name).read_bytes()


def test_dist_test_checks_its_arguments():
    proc = subprocess.run(['bash', str(REPO / 'tools' / 'dist_test.sh'), 'config.py', 'ckpt.pth'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage:' in proc.stderr


def test_test_tool_config(tmp_path):
    """tools/test.py applies the command line as mmdet's test.py does; repeated --cfg-options merge."""
    spec = importlib.util.spec_from_file_location('freesolo_tools_test', REPO / 'tools' / 'test.py')
    test_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_tool)
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    args = test_tool.parse_args([
        str(REPO / 'configs' / 'freesolo_r50.py'), str(checkpoint), '--cfg-options', 'model.test_cfg.score_thr=0',
        '--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(160,96)', '--show-dir', 'shows'])
    cfg = test_tool.build_config(args)
    assert cfg.load_from == str(checkpoint) and cfg.work_dir == './work_dirs/freesolo_r50'
    assert cfg.model.test_cfg.score_thr == 0 and cfg.test_dataloader.dataset.pipeline[1].scale == (160, 96)
    assert cfg.default_hooks.visualization.draw and cfg.default_hooks.visualization.test_out_dir == 'shows'
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        test_tool.build_config(test_tool.parse_args([args.config, str(tmp_path / 'missing.pth')]))
    with pytest.raises(InputError, match='is not a key'):  # a typo fails before any work
        test_tool.build_config(test_tool.parse_args([args.config, str(checkpoint), '--cfg-options', 'modle.x=1']))
