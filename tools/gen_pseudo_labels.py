"""Self-training pseudo labels (FreeSOLO stage 3): a trained model's masks on the training images -> COCO json.

    python tools/gen_pseudo_labels.py CONFIG CHECKPOINT --images DIR --out round1.json
    python tools/gen_pseudo_labels.py CONFIG CHECKPOINT --ann-file train.json --img-prefix DIR --out round1.json

Runs the config's test pipeline and model, keeps masks with score >= --score-thr (0.3) whose box is at
most --max-width (0.95) of the image width, at most --max-per-img (20) per image, and writes them in
the Free Mask format (RLE, tight XYWH bbox, area, score, emb, ids 1..N). Images without a kept mask
and unreadable images are left out and listed in OUT.report.json (OUT without its .json suffix).

Round 2, retrained from the pre-trained backbone as the authors' release does (not from CHECKPOINT),
is a three-line config next to the round-1 config (an absolute ann_file is not joined with data_root)::

    _base_ = './freesolo_r50_coarse.py'
    load_from = None
    train_dataloader = dict(dataset=dict(ann_file='/abs/path/round1.json'))

To continue training on refreshed labels within one run instead, use ``SelfTrainingHook``.
"""
import argparse
import json
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope


from freesolo_mmdet.datasets.image_list import (add_image_source_arguments, check_image_source_arguments,
                                               build_inference_model, list_images)
from freesolo_mmdet.engine.pseudo_labels import (collect_pseudo_label_coco, find_test_pipeline,  # noqa: E402
                                                 predict_pseudo_labels)
from freesolo_mmdet.free_mask.coco_writer import atomic_open, dump_json_atomic  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate FreeSOLO self-training pseudo labels as a COCO json.')
    parser.add_argument('config', help='config of the trained model')
    parser.add_argument('checkpoint', help='trained weights')
    add_image_source_arguments(parser)
    parser.add_argument('--out', required=True, help='output COCO json')
    parser.add_argument('--score-thr', type=float, default=0.3, help='minimum score of a pseudo label')
    parser.add_argument('--max-per-img', type=int, default=20, help='at most this many pseudo labels per image')
    parser.add_argument('--max-width', type=float, default=0.95,
                        help='drop masks whose box is wider than this fraction of the image width (1: keep all)')
    parser.add_argument('--keep-empty', action='store_true',
                        help='also list images without a kept mask in "images" (predictions for every image)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--num-workers', type=int, default=2, help='data loading processes')
    parser.add_argument('--device', help='default: cuda if available, else cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.test_cfg.score_thr=0.2')
    args = parser.parse_args(argv)
    check_image_source_arguments(parser, args)
    return args


def main(argv=None) -> dict:
    """Writes ``--out`` and its report; returns the report."""
    args = parse_args(argv)
    MMLogger.get_instance('gen_pseudo_labels', log_level='WARNING')
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'no such {what}: {path}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    images = list_images(args.images, args.ann_file, args.img_prefix)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_inference_model(cfg, args.checkpoint, device)
    entries = predict_pseudo_labels(model, images, find_test_pipeline(cfg), score_thr=args.score_thr,
                                    max_per_img=args.max_per_img, max_width=args.max_width,
                                    batch_size=args.batch_size, num_workers=args.num_workers, show_progress=True)
    coco, report = collect_pseudo_label_coco(entries, keep_empty=args.keep_empty)
    dump_json_atomic(coco, args.out)
    report_file = osp.splitext(args.out)[0] + '.report.json'
    with atomic_open(report_file) as f:
        json.dump(dict(out=osp.basename(args.out), **report), f, indent=1)
    print(f'{args.out}: {report["num_annotations"]} masks on {report["num_images_with_masks"]} of '
          f'{report["num_images"]} images; {report["num_skipped"]} unreadable, {report["num_no_mask"]} '
          f'without a mask (see {report_file})')
    return report


if __name__ == '__main__':
    main()
