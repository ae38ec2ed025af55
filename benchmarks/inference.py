"""Time FreeSOLO's inference against stock SOLOv2's at 800 px: the mask head's predict path alone on identical FPN
features, and the full ``model.predict`` (backbone + neck + head). Run by hand:

    OMP_NUM_THREADS=1 python benchmarks/inference.py [--height 800 --width 1216] [--batch 1] [--repeats 5]
        [--device cpu|cuda] [--threads 1]

Models: ``configs/freesolo_r50.py`` (FreeSOLOHead: also predicts an embedding per cell, returns the kept cells'
L2-normalised ``embs`` and tight ``bboxes`` of the masks) and mmdet's ``solov2_r50_fpn_1x_coco.py`` with
``num_classes=1`` (zero boxes, no embeddings), both in eval mode with random weights; FreeSOLO gets the stock
model's backbone, neck and head weights (its embedding conv stays random), so that both predict the same masks.

Non-trivial predictions: random weights give scores of about 0.01 (the focal prior), below SOLOv2's
``score_thr=0.1``, so both models' ``test_cfg`` is set to ``score_thr=0`` (every local maximum of the point NMS
enters), ``filter_thr=0`` (matrix NMS drops nothing), the stock ``nms_pre=500``, ``mask_thr=0.5`` and
``max_per_img=--max-per-img`` (100): each image then yields ``max_per_img`` masks (printed, and checked equal
between the models), upsampled to the full image, the costliest case of the predict path.

Timed (median of ``--repeats`` after a warm-up, no grad): (1) ``mask_head.predict`` of each head on the stock
model's FPN output for a random ``--batch`` x 3 x ``--height`` x ``--width`` image batch (normalised and padded by
the stock preprocessor); (2) ``model.predict`` of each model on that batch. Issue target: FreeSOLO / stock
<= 1.02 (inference).
"""
import argparse
import os.path as osp
import sys

import numpy as np
import torch
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import median_time  # noqa: E402
from train_step import add_size_arguments, build_models, parse_size_arguments  # noqa: E402

from mmdet.structures import DetDataSample  # noqa: E402


def make_image_batch(batch: int, height: int, width: int, seed: int = 0) -> dict:
    """``batch`` random uint8 (3, height, width) BGR images and data samples with their test-time metainfo."""
    rng = np.random.default_rng(seed)
    inputs = [torch.from_numpy(rng.integers(0, 256, (3, height, width), dtype=np.uint8)) for _ in range(batch)]
    samples = [
        DetDataSample(metainfo=dict(img_id=index, img_path=f'random_{index}.jpg', ori_shape=(height, width),
                                    img_shape=(height, width), scale_factor=(1.0, 1.0))) for index in range(batch)
    ]
    return dict(inputs=inputs, data_samples=samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_arguments(parser, batch=1)
    parser.add_argument('--max-per-img', type=int, default=100, help='masks kept per image (test_cfg)')
    args = parse_size_arguments(parser)
    MMLogger.get_instance('inference_benchmark', log_level='WARNING')
    device = args.device

    solov2, freesolo = build_models(device)
    models = dict(SOLOv2=solov2.eval(), FreeSOLO=freesolo.eval())
    for model in models.values():
        model.mask_head.test_cfg.update(
            score_thr=0., filter_thr=0., nms_pre=500, mask_thr=0.5, max_per_img=args.max_per_img)
    batch = solov2.data_preprocessor(make_image_batch(args.batch, args.height, args.width), training=False)
    inputs, samples = batch['inputs'], batch['data_samples']

    with torch.no_grad():
        feats = solov2.extract_feat(inputs)
        results = {name: model.mask_head.predict(feats, samples, rescale=True) for name, model in models.items()}
        head_s = {
            name: median_time(lambda model=model: model.mask_head.predict(feats, samples, rescale=True),
                              args.repeats, device)
            for name, model in models.items()
        }
        full_s = {
            name: median_time(lambda model=model: model.predict(inputs, samples, rescale=True), args.repeats, device)
            for name, model in models.items()
        }

    stock, ours = results['SOLOv2'], results['FreeSOLO']
    counts = [len(r) for r in ours]
    same = all(len(a) == len(b) and torch.equal(a.masks, b.masks) for a, b in zip(stock, ours))
    fields = ', '.join(f'{key} {tuple(value.shape)}' for key, value in ours[0].items())
    print(f'device {device}, {torch.get_num_threads()} threads; batch {args.batch} x {args.height}x{args.width} '
          f'(padded {tuple(inputs.shape[-2:])}), FPN {[tuple(f.shape[-2:]) for f in feats]}; '
          f'median of {args.repeats} after a warm-up')
    print(f'masks per image {counts} (max_per_img {args.max_per_img}), same masks in both models: '
          f'{"yes" if same else "NO"}; FreeSOLO image 1: {fields}')
    print(f'{"":44s} {"SOLOv2":>10s} {"FreeSOLO":>10s} {"ratio":>8s}  target')
    for name, times in (('mask head predict (same FPN features)', head_s), ('model.predict (backbone+neck+head)',
                                                                            full_s)):
        print(f'{name:44s} {1000 * times["SOLOv2"]:8.1f}ms {1000 * times["FreeSOLO"]:8.1f}ms '
              f'{times["FreeSOLO"] / times["SOLOv2"]:8.3f}  <= 1.02')
    assert isinstance(ours[0], InstanceData)


if __name__ == '__main__':
    main()
