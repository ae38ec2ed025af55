"""Time one training step (loss + backward) of FreeSOLOHead against the stock SOLOv2Head on identical
inputs: the same FPN features of a batch at ``--size`` and the same ground-truth masks. Run by hand:

    python benchmarks/head_step.py --size 800 --batch 2 --repeats 5 [--device cuda]

Both heads are the head of ``configs/freesolo_r50.py`` (FreeSOLO: max/avg projection, pairwise, focal,
embedding losses) and of mmdet's ``solov2_r50_fpn_1x_coco.py`` with ``num_classes=1`` (dice + focal).
Issue target: FreeSOLOHead's step at most 1.10x the stock one. Also times the colour similarity
that ``FreeSOLODataPreprocessor`` adds per batch.
"""
import argparse
import os.path as osp
import statistics
import time
from typing import Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmdet
from freesolo_mmdet.models.data_preprocessors.color_similarity import FreeSOLODataPreprocessor
from freesolo_mmdet.models.dense_heads.freesolo_head import FreeSOLOHead  # noqa: F401 (registers it)
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, mask2bbox

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FREESOLO_CONFIG = osp.join(REPO, 'configs', 'freesolo_r50.py')
SOLOV2_CONFIG = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'solov2', 'solov2_r50_fpn_1x_coco.py')


def ellipse_masks(rng: np.random.Generator, num: int, size: int) -> np.ndarray:
    """(num, size, size) uint8 masks of random ellipses, 2% to 40% of the side in radius."""
    rows, cols = np.mgrid[:size, :size]
    masks = []
    for _ in range(num):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        ry, rx = rng.uniform(0.02, 0.4, 2) * size
        masks.append(((rows - cy) / ry)**2 + ((cols - cx) / rx)**2 <= 1)
    return np.stack(masks).astype(np.uint8)


def make_batch(batch: int, size: int, num_objects: int, device: str, seed: int = 0) -> dict:
    """Raw images (B, 3, size, size) uint8 and data samples with masks, boxes, labels and embs."""
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8)))
        masks = ellipse_masks(rng, num_objects, size)
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        sample.gt_instances = InstanceData(
            masks=BitmapMasks(masks, size, size),
            bboxes=HorizontalBoxes(mask2bbox(torch.from_numpy(masks).bool()).float()),
            labels=torch.zeros(num_objects, dtype=torch.long),
            embs=torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(num_objects, 128))).float()))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def median_time(fn, repeats: int, device: str, setup=None) -> float:
    """Median wall time of ``repeats`` calls of ``fn()`` (after one warm-up call); with ``setup``, of
    ``fn(setup())``, ``setup`` not timed (e.g. a fresh copy of what ``fn`` mutates)."""
    call = (lambda arg: fn()) if setup is None else fn
    make = setup or (lambda: None)
    call(make())
    times = []
    for _ in range(repeats):
        arg = make()
        if device == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        call(arg)
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_times(fns: dict, repeats: int, device: str, setups: Optional[dict] = None) -> dict:
    """Median wall time of each of ``fns`` (name -> callable), timed in ``repeats`` rounds that call each once in
    turn (after one warm-up call each), so that a slow drift of the machine's speed during the run weighs on all
    of them alike; ratios of these are fairer than of :func:`median_time` calls made one after another. A name in
    ``setups`` is called as ``fn(setups[name]())``, the setup not timed."""
    setups = setups or {}
    samples = {name: [] for name in fns}
    for round_index in range(repeats + 1):
        for name, fn in fns.items():
            arg = setups[name]() if name in setups else None
            if device == 'cuda':
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(arg) if name in setups else fn()
            if device == 'cuda':
                torch.cuda.synchronize()
            if round_index:  # round 0 is the warm-up
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=800, help='square input side (a multiple of 32)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--num-objects', type=int, default=10, help='ground-truth masks per image')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--without-pairwise', action='store_true', help='FreeSOLOHead without the pairwise loss')
    args = parser.parse_args()
    if args.size % 32:
        parser.error('--size must be a multiple of 32')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    # past the pairwise loss's warm-up, so that it is computed at full weight
    MessageHub.get_current_instance().update_info('iter', 10**6)

    freesolo_cfg = Config.fromfile(FREESOLO_CONFIG).model
    solov2_cfg = Config.fromfile(SOLOV2_CONFIG).model
    solov2_cfg.mask_head.num_classes = 1
    if args.without_pairwise:
        freesolo_cfg.mask_head.loss_mask_pairwise = None
    heads = dict(
        FreeSOLOHead=MODELS.build(freesolo_cfg.mask_head).to(args.device).train(),
        SOLOV2Head=MODELS.build(solov2_cfg.mask_head).to(args.device).train())

    preprocessor_cfg = dict(freesolo_cfg.data_preprocessor)
    preprocessor_cfg.pop('type')
    # the heads are timed on --batch images: no two-view doubling of the batch
    preprocessor_cfg.pop('batch_augments', None)
    preprocessor = FreeSOLODataPreprocessor(**preprocessor_cfg).to(args.device)
    batch = preprocessor(make_batch(args.batch, args.size, args.num_objects, args.device), training=True)
    inputs, data_samples = batch['inputs'], batch['data_samples']

    channels = freesolo_cfg.neck.out_channels
    feats = [  # P2-P6 of the FPN: strides 4, 8, 16, 32, 64
        torch.randn(args.batch, channels, -(-args.size // s), -(-args.size // s), device=args.device,
                    requires_grad=True) for s in (4, 8, 16, 32, 64)
    ]

    def step(head) -> None:
        head.zero_grad()
        losses = head.loss(feats, data_samples)
        sum(losses.values()).backward()

    print(f'device {args.device}, batch {args.batch} x {args.size}^2, {args.num_objects} masks per image, '
          f'pairwise loss {"off" if args.without_pairwise else "on"}, '
          f'{torch.get_num_threads()} threads, median of {args.repeats} interleaved rounds')
    times = interleaved_median_times({name: (lambda head=head: step(head)) for name, head in heads.items()},
                                     args.repeats, args.device)
    for name in heads:
        print(f'{name:13s} loss + backward: {times[name] * 1000:8.1f} ms')
    ratio = times['FreeSOLOHead'] / times['SOLOV2Head']
    print(f'ratio FreeSOLOHead / SOLOV2Head: {ratio:.3f} (target <= 1.10)')
    similarity_s = median_time(lambda: preprocessor.get_color_similarity(inputs, data_samples), args.repeats,
                               args.device)
    print(f'colour similarity (preprocessor, per batch): {similarity_s * 1000:.1f} ms = '
          f'{100 * similarity_s / times["FreeSOLOHead"]:.1f}% of the FreeSOLOHead step '
          '(see benchmarks/color_similarity.py for the share of a full R50 step)')


if __name__ == '__main__':
    main()
