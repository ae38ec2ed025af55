"""Held-out benchmark generator: exact masks re-rendered from the paste
records, sizes, scales, crowds, grayscale files, kinds disjoint from the
demo's, determinism, cut-out quality, bad input and the CLI."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy import ndimage as ndi
from skimage import measure

from freesolo_mmdet.datasets import make_heldout_dataset as exported
from freesolo_mmdet.datasets.demo_scenes import KINDS as DEMO_KINDS
from freesolo_mmdet.datasets.demo_scenes import load_textures
from freesolo_mmdet.datasets.heldout_scenes import (HELDOUT_KINDS,
                                                    PHOTO_KINDS, HeldoutConfig,
                                                    load_heldout_cutouts,
                                                    load_heldout_textures,
                                                    make_heldout_dataset,
                                                    render_heldout_scene)

SEED, NUM = 0, 8  # seed 0: image 4 is a crowd, 1 and 3 are grayscale
CFG = HeldoutConfig()


@pytest.fixture(scope='module')
def out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('heldout')
    result = make_heldout_dataset(str(out), num_images=NUM, seed=SEED,
                                  progress=False)
    assert result['num_images'] == NUM
    assert result['files']['gt_json'] == str(out / 'annotations' / 'gt.json')
    return out


@pytest.fixture(scope='module')
def gt(out) -> dict:
    return json.loads((out / 'annotations' / 'gt.json').read_text())


def anns_of(gt: dict, image_id: int) -> list:
    return [a for a in gt['annotations'] if a['image_id'] == image_id]


def test_masks_are_footprints_minus_those_above_re_rendered(out, gt):
    cutouts = load_heldout_cutouts()
    assert [i['id'] for i in gt['images']] == list(range(1, NUM + 1))
    for index, info in enumerate(gt['images']):
        scene = render_heldout_scene(SEED, index)
        width, height = info['width'], info['height']
        assert scene.image.shape[:2] == (height, width)
        assert info['file_name'] == scene.file_name
        footprints = []
        for paste in scene.pastes:  # footprints recomputed from the records
            alpha = cutouts[paste.cutout_index].alpha.astype(np.uint8) * 255
            footprints.append(cv2.warpAffine(alpha, paste.matrix,
                                             (width, height)) >= 128)
            np.testing.assert_array_equal(footprints[-1], paste.footprint)
        anns = anns_of(gt, index + 1)
        assert [a['kind'] for a in anns] == [p.kind for p in scene.pastes]
        covered = np.zeros((height, width), bool)
        for footprint, ann in zip(footprints[::-1], anns[::-1]):
            decoded = mask_utils.decode(ann['segmentation']).astype(bool)
            np.testing.assert_array_equal(decoded, footprint & ~covered)
            covered |= footprint
            assert ann['area'] == decoded.sum() >= CFG.min_visible_pixels
            assert decoded.sum() >= CFG.min_visible_fraction * footprint.sum()
            rows, cols = np.nonzero(decoded)
            assert ann['bbox'] == [cols.min(), rows.min(),
                                   cols.max() - cols.min() + 1,
                                   rows.max() - rows.min() + 1]
            assert ann['category_id'] == 1 and ann['iscrowd'] == 0


def test_masks_do_not_overlap_and_coco_loads(out, gt):
    coco = COCO(str(out / 'annotations' / 'gt.json'))
    assert coco.loadCats(coco.getCatIds()) == [dict(id=1, name='object')]
    for info in gt['images']:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info['id']]))
        total = sum(coco.annToMask(a).astype(int) for a in anns)
        assert total.max() == 1
        assert total.sum() == sum(a['area'] for a in anns)


def test_files_sizes_channels_and_formats(out, gt):
    names = sorted(p.name for p in (out / 'images').iterdir())
    assert names == sorted(i['file_name'] for i in gt['images'])
    for info in gt['images']:
        image = cv2.imread(str(out / 'images' / info['file_name']),
                           cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (info['height'], info['width'])
        assert (image.ndim == 2) == (info['channels'] == 1)
        assert image.ndim == 2 or image.shape[2] == 3
    low, high = CFG.side_range
    widths = [i['width'] for i in gt['images']]
    heights = [i['height'] for i in gt['images']]
    assert low <= min(widths + heights) and max(widths + heights) <= high
    assert len(set(widths)) >= NUM // 2 and len(set(heights)) >= NUM // 2
    assert sum(w != h for w, h in zip(widths, heights)) >= NUM // 2
    assert 1 <= sum(i['channels'] == 1 for i in gt['images']) < NUM // 2
    assert {Path(n).suffix for n in names} <= {'.jpg', '.png'}
    preview = cv2.imread(str(out / 'preview.png'))
    assert preview.shape == (2 * 256, 4 * 256, 3)


def test_crowds_and_normal_scenes(gt):
    crowds = [i for i in gt['images'] if i['crowd']]
    assert crowds and len(crowds) < NUM
    for info in gt['images']:
        anns = anns_of(gt, info['id'])
        if info['crowd']:
            assert 20 < len(anns) <= CFG.crowd_objects[1]
            assert len({a['kind'] for a in anns}) == 1
        else:
            assert CFG.min_objects <= len(anns) <= CFG.max_objects


def test_object_scales(gt):
    cutouts = load_heldout_cutouts()
    fractions = []
    for index, info in enumerate(gt['images']):
        short = min(info['width'], info['height'])
        for paste, ann in zip(render_heldout_scene(SEED, index).pastes,
                              anns_of(gt, index + 1)):
            longest = np.sqrt(abs(np.linalg.det(paste.matrix[:, :2]))) * max(
                cutouts[paste.cutout_index].alpha.shape)
            fractions.append(longest / short)
            # a rotated cut-out spans at most sqrt(2) times its longest side
            assert max(ann['bbox'][2:]) <= CFG.scale_range[1] * np.sqrt(
                2) * short + 2
    fractions = np.array(fractions)
    low, high = CFG.scale_range
    assert low - 1e-9 <= fractions.min() and fractions.max() <= high + 1e-9
    assert fractions.min() < 0.04 and (fractions < 0.1).mean() > 0.5
    assert fractions.max() > 0.12


def test_kinds_and_textures_are_not_the_demos(gt):
    assert gt['kinds'] == list(HELDOUT_KINDS)
    assert not set(HELDOUT_KINDS) & set(DEMO_KINDS)
    kinds = {a['kind'] for a in gt['annotations']}
    assert kinds <= set(HELDOUT_KINDS) and len(kinds) >= 4
    demo_textures = load_textures()
    for texture in load_heldout_textures():
        assert not any(t.shape == texture.shape and np.array_equal(t, texture)
                       for t in demo_textures)


def test_cutouts_are_single_objects():
    cutouts = load_heldout_cutouts()
    assert {c.kind for c in cutouts} == set(HELDOUT_KINDS)
    for cutout in cutouts:
        alpha = cutout.alpha
        assert cutout.rgb.shape == alpha.shape + (3, )
        assert max(alpha.shape) <= 256
        assert measure.label(alpha).max() == 1, cutout.kind
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0],
                                 alpha[:, -1]])
        assert border.mean() < 0.2, cutout.kind
        assert 0.3 < alpha.mean() < 0.95, cutout.kind
        filled = ndi.binary_fill_holes(alpha)
        assert (filled.sum() > alpha.sum() * 1.3) == (cutout.kind == 'ring')
    assert [c.kind for c in cutouts[:len(PHOTO_KINDS)]] == list(PHOTO_KINDS)


def test_same_seed_gives_identical_files_and_rerun_replaces(out, tmp_path):
    again = tmp_path / 'again'
    make_heldout_dataset(str(again), num_images=NUM, seed=SEED,
                         progress=False)
    for path in out.rglob('*'):
        if path.is_file():
            assert (again / path.relative_to(out)).read_bytes() == \
                path.read_bytes(), path
    other = tmp_path / 'other'
    make_heldout_dataset(str(other), num_images=2, seed=SEED + 1,
                         progress=False)
    assert (other / 'annotations' / 'gt.json').read_bytes() != \
        (out / 'annotations' / 'gt.json').read_bytes()
    # an earlier output is replaced, its extra images removed
    make_heldout_dataset(str(again), num_images=2, seed=SEED, progress=False)
    assert len(list((again / 'images').iterdir())) == 2
    assert len(json.loads(
        (again / 'annotations' / 'gt.json').read_text())['images']) == 2


def test_bad_input(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError):
        make_heldout_dataset(str(tmp_path / 'file'), num_images=1)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'holiday.jpg').write_bytes(b'')
    with pytest.raises(FileExistsError, match='not an earlier'):
        make_heldout_dataset(str(foreign), num_images=1)
    (foreign / 'holiday.jpg').unlink()
    (foreign / 'images').mkdir()
    (foreign / 'images' / 'mine.jpg').write_bytes(b'')
    with pytest.raises(FileExistsError, match='mine.jpg'):
        make_heldout_dataset(str(foreign), num_images=1)
    assert (foreign / 'images' / 'mine.jpg').exists()
    with pytest.raises(ValueError, match='num_images'):
        make_heldout_dataset(str(tmp_path / 'a'), num_images=0)
    for bad in (dict(side_range=(640, 256)), dict(scale_range=(0.3, 0.02)),
                dict(min_objects=0), dict(grey_fraction=1.5),
                dict(crowd_objects=(30, 20))):
        with pytest.raises(ValueError):
            HeldoutConfig(**bad)


def test_exported_from_the_package():
    assert exported is make_heldout_dataset


def test_tool_prints_summary_and_reports_errors(tmp_path, capsys):
    import importlib.util
    path = Path(__file__).resolve().parents[1] / 'tools' / \
        'make_heldout_data.py'
    spec = importlib.util.spec_from_file_location('make_heldout_data', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--out', str(tmp_path / 'h'), '--num-images', '2',
               '--min-side', '64', '--max-side', '96', '--no-progress'])
    printed = capsys.readouterr().out
    assert '2 images' in printed and 'instances per image' in printed
    assert 'object kinds: ' + ', '.join(HELDOUT_KINDS) in printed
    gt = json.loads((tmp_path / 'h' / 'annotations' / 'gt.json').read_text())
    assert all(64 <= i['width'] <= 96 for i in gt['images'])
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match='error: .*not an earlier'):
        tool.main(['--out', str(tmp_path / 'x'), '--no-progress'])
    with pytest.raises(SystemExit, match='error: .*side_range'):
        tool.main(['--out', str(tmp_path / 'y'), '--min-side', '700'])
