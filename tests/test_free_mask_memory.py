"""Free Mask on a 48-megapixel photo stays under 2 GB: full-resolution masks are made one at a time and the
COCO writer does not copy them.

The whole path runs in a fresh process (``ru_maxrss`` is the process's high-water mark): decode with Pillow,
resize to 1333x800, a random-weight ResNet-18 at 1/4 width, Free Mask with top_k=20 and no filter, COCO
annotations. Before the streaming (all 20 soft masks resized at once in float32, masks copied by the filter
and the writer) this peaked at 9.2 GB; after it at 1.7 GB: 0.4-0.6 GB of imports and model, 20 x 48 MB of
bool masks, one 192 MB float map.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, TOP_K = 6000, 8000, 20
LIMIT_BYTES = 2e9

SCRIPT = '''
import json, resource, sys
import torch
from mmdet.registry import MODELS
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope

import freesolo_mmdet  # noqa: F401
from freesolo_mmdet.free_mask.coco_writer import masks_to_coco_annotations

init_default_scope('mmdet')
torch.manual_seed(0)
model = MODELS.build(dict(
    type='FreeMaskGenerator',
    backbone=dict(type='ResNet', depth=18, base_channels=16, out_indices=(3, ), init_cfg=None),
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    tau=0.1, top_k=%d, min_score=None, sky_filter=None, width_filter=None)).eval()  # 20 large masks
pipeline = Compose([
    dict(type='LoadImageFromFile', imdecode_backend='pillow'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))])
imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = model.test_step(pseudo_collate([pipeline(dict(img_path=sys.argv[1], img_id=1))]))[0]
annotations = masks_to_coco_annotations(result.masks, result.scores, 1, result.embs)
print(json.dumps(dict(peak_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, imports_kb=imports_kb,
                      shape=list(result.masks.shape), areas=[ann['area'] for ann in annotations],
                      package=freesolo_mmdet.__file__)))
''' % TOP_K


def write_photo(path: str) -> None:
    """A smooth colour gradient with eight coloured ellipses, drawn at 80x60 and resized to WIDTH x HEIGHT."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:60, 0:80]
    small = np.stack([rows * 3, cols * 2, 255 - rows * 2], -1).astype(np.uint8)
    for _ in range(8):
        (cy, cx), (ry, rx) = rng.integers(5, (55, 75)), rng.integers(5, (20, 25))
        small[((rows - cy) / ry)**2 + ((cols - cx) / rx)**2 <= 1] = rng.integers(0, 256, 3)
    cv2.imwrite(path, cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR),
                [cv2.IMWRITE_JPEG_QUALITY, 90])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='ru_maxrss is in KiB on Linux only')
def test_free_mask_path_on_48_megapixels_stays_under_2_gb(tmp_path):
    photo = str(tmp_path / 'photo.jpg')
    write_photo(photo)
    # this checkout's freesolo_mmdet, whichever one the environment has installed
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
    proc = subprocess.run([sys.executable, '-c', SCRIPT, photo], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=python_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the load is real: top_k masks at full resolution, each covering most of the photo
    assert result['shape'] == [TOP_K, HEIGHT, WIDTH] and len(result['areas']) == TOP_K
    assert min(result['areas']) > 0.5 * HEIGHT * WIDTH
    assert result['package'] == str(REPO / 'freesolo_mmdet' / '__init__.py')
    peak = result['peak_kb'] * 1024
    assert peak < LIMIT_BYTES, (f'peak RSS {peak / 1e9:.2f} GB (imports {result["imports_kb"] * 1024 / 1e9:.2f} GB) '
                                f'for a {WIDTH}x{HEIGHT} photo')
