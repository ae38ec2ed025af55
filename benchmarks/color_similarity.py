"""Time FreeSOLODataPreprocessor's colour similarity against one SOLOv2 R50
training step (forward + backward) on the same batch. Run by hand:

    python benchmarks/color_similarity.py --size 512 --batch 2 --repeats 3

Issue target: the colour similarity costs at most 5% of a training step.
"""
import argparse
import os.path as osp
import time

import torch
from mmengine.config import Config

import mmdet
from freesolo_mmdet.models.data_preprocessors.color_similarity import \
    FreeSOLODataPreprocessor
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules

SOLOV2_CONFIG = osp.join(
    osp.dirname(mmdet.__file__), '.mim', 'configs', 'solov2',
    'solov2_r50_fpn_1x_coco.py')


def best_time(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls of ``fn`` (after a warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    register_all_modules()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'

    cfg = Config.fromfile(SOLOV2_CONFIG)
    preprocessor_cfg = dict(cfg.model.data_preprocessor)
    preprocessor_cfg.pop('type')
    preprocessor = FreeSOLODataPreprocessor(**preprocessor_cfg).to(device)
    model = MODELS.build(cfg.model).to(device).train()

    data = demo_mm_inputs(
        batch_size=args.batch,
        image_shapes=[(3, args.size, args.size)] * args.batch,
        num_items=[5] * args.batch,
        num_classes=2,
        with_mask=True)
    batch = preprocessor(data, training=True)
    inputs, data_samples = batch['inputs'], batch['data_samples']

    def train_step() -> None:
        losses = model.loss(inputs, data_samples)
        sum(losses.values()).backward()

    def similarity() -> None:
        preprocessor.get_color_similarity(inputs, data_samples)

    step_s = best_time(train_step, args.repeats)
    similarity_s = best_time(similarity, args.repeats)
    print(f'device {device}, batch {args.batch} x {args.size}^2, '
          f'{torch.get_num_threads()} threads')
    print(f'SOLOv2 R50 training step: {step_s * 1000:.1f} ms')
    print(f'colour similarity:        {similarity_s * 1000:.2f} ms '
          f'({100 * similarity_s / step_s:.2f}% of a step, target <= 5%)')


if __name__ == '__main__':
    main()
