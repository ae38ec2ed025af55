"""Self-training pseudo labels (FreeSOLO stage 3): a trained model's masks on the training images -> COCO json.

    python tools/gen_pseudo_labels.py CONFIG CHECKPOINT --images DIR --out round1.json
    python tools/gen_pseudo_labels.py CONFIG CHECKPOINT --ann-file train.json --img-prefix DIR --out round1.json
    python -m torch.distributed.run --nproc_per_node N tools/gen_pseudo_labels.py ... --launcher pytorch

Runs the config's test pipeline and model, keeps masks with score >= --score-thr (0.3) whose box is at
most --max-width (0.95) of the image width, at most --max-per-img (20) per image, and writes them in
the Free Mask format (RLE, tight XYWH bbox, area, score, emb, ids 1..N). Images without a kept mask
and unreadable images are left out and listed in OUT.report.json (OUT without its .json suffix).
When no mask is kept on any image, OUT is still written (empty, never stale) and the tool exits with code 2.
The work is :func:`freesolo_mmdet.apis.predict_masks`; this is its command line.

Round 2 retrains from the pre-trained backbone, as the authors' release does (not from CHECKPOINT), on
these labels: the README's COCO recipe, step 3, or ``tools/freesolo_pipeline.py``, which runs every stage.
To continue training on refreshed labels within one run instead, use ``SelfTrainingHook``.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction
from mmengine.logging import MMLogger

from freesolo_mmdet.apis import InputError, init_distributed, load_config, predict_masks, run_main
from freesolo_mmdet.datasets.image_list import add_image_source_arguments, check_image_source_arguments, \
    list_images


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
    parser.add_argument('--flip', action='store_true',
                        help="average each image's masks over the image and its mirror image (not in the spec; "
                             'twice the compute)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--num-workers', type=int, default=2, help='data loading processes')
    parser.add_argument('--device', help='default: cuda if available, else cpu')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.test_cfg.score_thr=0.2 (existing keys only)')
    args = parser.parse_args(argv)
    check_image_source_arguments(parser, args)
    return args


def main(argv=None) -> dict:
    """Writes ``--out`` and its report; returns the report."""
    args = parse_args(argv)
    MMLogger.get_instance('gen_pseudo_labels', log_level='WARNING')
    cfg = load_config(args.config, args.cfg_options)
    if args.launcher == 'pytorch':
        init_distributed()
    images = list_images(args.images, args.ann_file, args.img_prefix)
    report = predict_masks(cfg, args.checkpoint, images, args.out, score_thr=args.score_thr,
                           max_per_img=args.max_per_img, max_width=args.max_width, keep_empty=args.keep_empty,
                           batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                           flip=args.flip)
    print(f'{args.out}: {report["num_annotations"]} masks on {report["num_images_with_masks"]} of '
          f'{report["num_images"]} images; {report["num_skipped"]} unreadable, {report["num_no_mask"]} '
          f'without a mask (see {osp.splitext(args.out)[0]}.report.json)')
    if not report['num_annotations']:  # training on OUT would stop at 'annotation file has no images'
        raise InputError(f'{args.out} holds no label: no mask of the model reached --score-thr {args.score_thr} '
                         f'(and --max-width {args.max_width}) on any image; train the model longer or lower them')
    return report


if __name__ == '__main__':
    run_main(main)
