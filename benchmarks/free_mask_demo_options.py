"""Free Mask options on the demo val split: class-agnostic mask AP, AP50, AR100 (pycocotools,
``useCats = 0``), one row per option, as a markdown table. Run by hand from the repository root:

    python benchmarks/free_mask_demo_options.py [--out-dir work_dirs/free_mask_demo_options]

Every Free Mask row runs ``tools/generate_free_masks.py`` (the tool users run) on the val images
with ``configs/demo/free_mask_demo.py`` plus the row's overrides, then scores its json. The rows:
ImageNet-supervised MobileNetV2 at C5/C4, two input sizes, the paper's COCO filters or relaxed ones;
the same backbone randomly initialised (does pre-training matter?); a DenseCL ResNet-18 trained on
the demo images if ``work_dirs/densecl_demo/backbone.pth`` exists; and scikit-image's Felzenszwalb
graph segmentation with every segment taken as an instance (a classical baseline). Results and the
choice of the default: ``docs/free_mask_demo.md``. The default was chosen on the train split; score
it with ``--gt data/demo/annotations/train_gt.json --images data/demo/train``.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import os
import os.path as osp
import shutil
import time
from typing import Dict, List

import numpy as np
import torch
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmengine.config import Config
from skimage import io as skio
from skimage.measure import regionprops
from skimage.segmentation import felzenszwalb

from freesolo_mmdet.free_mask.coco_writer import masks_to_coco_annotations
from freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'demo', 'free_mask_demo.py')
PRETRAINED = osp.join(ROOT, 'work_dirs', 'pretrained', 'mobilenetv2_imagenet_mmdet.pth')
DENSECL = osp.join(ROOT, 'work_dirs', 'densecl_demo', 'backbone.pth')

PAPER = dict(sky_filter=0.2, width_filter=0.95, min_score=0.7, tau=0.5)  # the authors' COCO setting
RELAXED = dict(sky_filter=None, width_filter=0.95, min_score=None, tau=0.5)  # no sky/score filter
NO_SKY = dict(sky_filter=None, width_filter=0.95, min_score=0.7, tau=0.5)
DEMO = dict(sky_filter=None, width_filter=0.95, min_score=0.6, tau=0.4)  # as configs/demo/free_mask_demo.py
# MobileNetV2 out indices: 7 = final 1x1 conv (stride 32, 1280 ch), 6 = last block (stride 32, 320 ch),
# 5 = block 6 (stride 32, 160 ch), 4 = block 5 (stride 16, 96 ch)


def _option(name: str, level: int, size: int, settings: dict, init: str = 'imagenet') -> dict:
    return dict(name=name, level=level, size=size, settings=settings, init=init)


OPTIONS = [
    _option('C5 (idx 7, 1280 ch), 320 px, paper filters', 7, 320, PAPER),
    _option('C5 (idx 7, 1280 ch), 320 px, relaxed', 7, 320, RELAXED),
    _option('C5 (idx 7, 1280 ch), 640 px, paper filters', 7, 640, PAPER),
    _option('C5 (idx 7, 1280 ch), 640 px, relaxed', 7, 640, RELAXED),
    _option('C4 (idx 4, 96 ch), 320 px, paper filters', 4, 320, PAPER),
    _option('C4 (idx 4, 96 ch), 320 px, relaxed', 4, 320, RELAXED),
    _option('C4 (idx 4, 96 ch), 640 px, paper filters', 4, 640, PAPER),
    _option('C4 (idx 4, 96 ch), 640 px, relaxed', 4, 640, RELAXED),
    _option('stride 32 (idx 6, 320 ch), 640 px, paper filters', 6, 640, PAPER),
    _option('stride 32 (idx 5, 160 ch), 640 px, paper filters', 5, 640, PAPER),
    _option('stride 32 (idx 5, 160 ch), 640 px, relaxed', 5, 640, RELAXED),
    _option('stride 32 (idx 5, 160 ch), 640 px, no sky filter', 5, 640, NO_SKY),
    _option('stride 32 (idx 5, 160 ch), 320 px, demo settings', 5, 320, DEMO),
    _option('stride 32 (idx 5, 160 ch), 640 px, demo settings', 5, 640, DEMO),
    _option('**demo default**: stride 32 (idx 5, 160 ch), 544 px, demo settings', 5, 544, DEMO),
    _option('stride 32 (idx 5, 160 ch), 800 px, demo settings', 5, 800, DEMO),
    _option('stride 32 (idx 5, 160 ch), 1088 px, demo settings', 5, 1088, DEMO),
    _option('demo default + GrabCut refinement (3 iterations)', 5, 544, dict(DEMO, refine_iters=3)),
    _option('demo default + GrabCut refinement (5 iterations)', 5, 544, dict(DEMO, refine_iters=5)),
    _option('800 px, demo settings + GrabCut refinement (3 iterations)', 5, 800, dict(DEMO, refine_iters=3)),
    _option('input pyramid 1x+1.5x, idx 5, 544 px, demo settings', 5, 544, dict(DEMO, input_scales=(1.0, 1.5))),
    _option('input pyramid 1x+2x, idx 5, 544 px, demo settings', 5, 544, dict(DEMO, input_scales=(1.0, 2.0))),
    _option('input pyramid 1x+2x, idx 5, 544 px, demo settings, top 50', 5, 544,
            dict(DEMO, input_scales=(1.0, 2.0), top_k=50)),
    _option('input pyramid 0.5x+1x+2x, idx 5, 544 px, demo settings, top 50', 5, 544,
            dict(DEMO, input_scales=(0.5, 1.0, 2.0), top_k=50)),
    _option('random init, idx 5, 544 px, demo settings', 5, 544, DEMO, init='random'),
    _option('random init, idx 5, 544 px, relaxed', 5, 544, RELAXED, init='random'),
]
DENSECL_OPTIONS = [  # ResNet-18 out indices: 3 = C5 (stride 32, 512 ch), 2 = C4 (stride 16, 256 ch)
    _option('DenseCL R18 (demo images), C5, 544 px, demo settings', 3, 544, DEMO, init='densecl'),
    _option('DenseCL R18 (demo images), C5, 544 px, relaxed', 3, 544, RELAXED, init='densecl'),
    _option('DenseCL R18 (demo images), C4, 544 px, relaxed', 2, 544, RELAXED, init='densecl'),
]
FELZENSZWALB_OPTIONS = [
    dict(name=f'Felzenszwalb, scale {scale}, {score} score', felzenszwalb=(scale, score))
    for scale, score in ((300, 'solidity'), (1000, 'solidity'), (1000, 'constant'))
]


def evaluate_segm(gt_file: str, annotations: List[dict]) -> Dict[str, float]:
    """Class-agnostic mask AP, AP50, AR100 (maxDets 1, 10, 100) of RLE detections with scores, and
    P50: the share of the detections (at most 100 per image) that match a ground truth at IoU 0.5,
    i.e. how clean the masks are as pseudo labels."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
        dets = [dict(image_id=a['image_id'], category_id=1, segmentation=a['segmentation'], score=a['score'])
                for a in annotations]
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # loadRes refuses an empty list; no detections scores 0
            coco_dt = COCO()
            coco_dt.dataset['images'] = coco_gt.dataset['images']
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, 'segm')
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = [1, 10, 100]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    matched = num_dets = 0
    for result in coco_eval.evalImgs:  # per image and area range; IoU 0.5 is the first threshold
        if result is not None and result['aRng'] == coco_eval.params.areaRng[0]:
            matched += int((result['dtMatches'][0] > 0).sum())
            num_dets += len(result['dtIds'])
    return dict(AP=coco_eval.stats[0], AP50=coco_eval.stats[1], AR100=coco_eval.stats[8],
                P50=matched / max(num_dets, 1))


def load_generate_tool():
    """``tools/generate_free_masks.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('generate_free_masks',
                                                  osp.join(ROOT, 'tools', 'generate_free_masks.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option_config(option: dict) -> Config:
    """The demo config with the option's backbone level, init, input size and filters."""
    cfg = Config.fromfile(CONFIG)
    cfg.model.update(option['settings'])
    cfg.test_pipeline[1]['scale'] = (1333, option['size'])
    backbone = cfg.model.backbone
    if option['init'] == 'imagenet':
        backbone.init_cfg.checkpoint = PRETRAINED
    elif option['init'] == 'random':
        backbone.init_cfg = None  # mmdet's MobileNetV2 default: Kaiming convs, constant norms
    elif option['init'] == 'densecl':
        state = torch.load(DENSECL, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        prefix = 'backbone.' if all(key.startswith('backbone.') for key in state) else None
        cfg.model.backbone = dict(
            type='ResNet', depth=18, num_stages=4, frozen_stages=4, norm_eval=True, style='pytorch',
            norm_cfg=dict(type='BN', requires_grad=False),
            init_cfg=dict(type='Pretrained', checkpoint=DENSECL, prefix=prefix))
    else:
        raise ValueError(f'unknown init {option["init"]!r}')
    cfg.model.backbone.out_indices = (option['level'], )
    return cfg


def run_free_mask(tool, option: dict, gt_file: str, img_dir: str, out_dir: str) -> tuple:
    """Annotations of the option's Free Masks on the images of ``gt_file``, and seconds taken."""
    slug = ''.join(c if c.isalnum() else '_' for c in option['name'])
    config_path = osp.join(out_dir, f'{slug}.py')
    option_config(option).dump(config_path)
    out = osp.join(out_dir, f'{slug}.json')
    shutil.rmtree(out + '.parts', ignore_errors=True)  # a killed earlier run's parts would be resumed
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        tool.main([config_path, '--ann-file', gt_file, '--img-prefix', img_dir, '--out', out,
                   '--num-workers', '0', '--device', 'cpu'])
    seconds = time.perf_counter() - start
    with open(out) as f:
        return json.load(f)['annotations'], seconds


def felzenszwalb_annotations(gt_file: str, img_dir: str, scale: float, score: str, sigma: float = 0.8,
                             min_size: int = 50, max_extent: float = 0.95) -> List[dict]:
    """Every Felzenszwalb segment of every image as an instance.

    Segments whose box spans ``max_extent`` of the image width or height are dropped as
    background (the same rule as Free Mask's width filter, applied to both sides). ``score``:
    'solidity' (segment area / convex hull area: compact segments first) or 'constant' (1.0).
    """
    with open(gt_file) as f:
        images = json.load(f)['images']
    annotations = []
    for image in images:
        img = skio.imread(osp.join(img_dir, image['file_name']))
        labels = felzenszwalb(img, scale=scale, sigma=sigma, min_size=min_size) + 1
        height, width = labels.shape
        masks, scores = [], []
        for region in regionprops(labels):
            top, left, bottom, right = region.bbox
            if right - left >= max_extent * width or bottom - top >= max_extent * height:
                continue
            masks.append(labels == region.label)
            scores.append(region.solidity if score == 'solidity' else 1.0)
        if masks:
            annotations += masks_to_coco_annotations(np.stack(masks), np.array(scores), image['id'])
    return annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gt', default=osp.join(ROOT, 'data', 'demo', 'annotations', 'val.json'))
    parser.add_argument('--images', default=osp.join(ROOT, 'data', 'demo', 'val'))
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'work_dirs', 'free_mask_demo_options'))
    parser.add_argument('--only', nargs='+', help='run only the rows whose name contains one of these')
    args = parser.parse_args()
    for path in (args.gt, args.images):
        if not osp.exists(path):
            raise FileNotFoundError(f'{path} is missing; make the demo data first: python tools/make_demo_data.py')
    os.makedirs(args.out_dir, exist_ok=True)
    if not osp.isfile(PRETRAINED):
        convert_deepsort_mobilenetv2(PRETRAINED)
    tool = load_generate_tool()
    with open(args.gt) as f:
        num_images = len(json.load(f)['images'])

    options = OPTIONS + (DENSECL_OPTIONS if osp.isfile(DENSECL) else [])
    options += FELZENSZWALB_OPTIONS
    if args.only:
        options = [o for o in options if any(key in o['name'] for key in args.only)]
    print(f'{num_images} images of {args.gt}; {torch.get_num_threads()} threads\n')
    print('| option | mask AP | AP50 | AR100 | P50 | masks/img | s/img |')
    print('|---|---|---|---|---|---|---|')
    for option in options:
        if 'felzenszwalb' in option:
            start = time.perf_counter()
            annotations = felzenszwalb_annotations(args.gt, args.images, *option['felzenszwalb'])
            seconds = time.perf_counter() - start
        else:
            annotations, seconds = run_free_mask(tool, option, args.gt, args.images, args.out_dir)
        stats = evaluate_segm(args.gt, annotations)
        columns = [100 * stats[key] for key in ('AP', 'AP50', 'AR100', 'P50')] + [len(annotations) / num_images]
        print(f"| {option['name']} | " + ' | '.join(f'{value:.1f}' for value in columns)
              + f' | {seconds / num_images:.3f} |', flush=True)


if __name__ == '__main__':
    main()
