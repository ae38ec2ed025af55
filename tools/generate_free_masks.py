"""Free Mask (FreeSOLO stage 1): a folder of images (or a COCO image list) -> one COCO json of coarse masks.

    python tools/generate_free_masks.py CONFIG --images DIR --out OUT.json
    python tools/generate_free_masks.py CONFIG --ann-file train.json --img-prefix DIR --out OUT.json
    bash tools/dist_generate_free_masks.sh 8 CONFIG --images DIR --out OUT.json

The images are cut into chunks of ``--chunk-size``; each finished chunk is written atomically to
``OUT.parts/chunk{k}.json``. A killed run continues where it stopped when rerun with the same
arguments (any number of processes), and the merged ``OUT`` is byte-identical to an uninterrupted
run's. The work is :func:`freesolo_mmdet.apis.generate_free_masks`; this is its command line.
Unreadable images and images without a surviving mask are left out of ``OUT`` and listed in
``OUT.report.json`` (``OUT`` without its ``.json`` suffix).
"""
import argparse

from mmengine.config import DictAction
from mmengine.logging import MMLogger

from freesolo_mmdet.apis import generate_free_masks, init_distributed, load_config, report_path, run_main
from freesolo_mmdet.datasets.image_list import add_image_source_arguments, check_image_source_arguments, \
    list_images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate FreeSOLO Free Masks as a COCO json.')
    parser.add_argument('config', help='Free Mask config, e.g. configs/free_mask/free_mask_r50_densecl.py')
    add_image_source_arguments(parser)
    parser.add_argument('--out', required=True, help='output COCO json')
    parser.add_argument('--checkpoint', help='weights to load instead of the config\'s init_cfg')
    parser.add_argument('--batch-size', type=int, help='images per forward pass')
    parser.add_argument('--num-workers', type=int, help='data loading processes')
    parser.add_argument('--chunk-size', type=int, help='images per partial result file')
    parser.add_argument('--max-chunks', type=int,
                        help='stop after this many new chunks per process (e.g. for time-limited jobs); '
                        'rerun to continue')
    parser.add_argument('--keep-parts', action='store_true', help='keep OUT.parts after merging')
    parser.add_argument('--device', help='default: cuda if available, else cpu')
    parser.add_argument('--seed', type=int, default=0, help='seed for any randomly initialised weights')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.min_score=0.5 (existing keys only)')
    args = parser.parse_args(argv)
    check_image_source_arguments(parser, args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    MMLogger.get_instance('generate_free_masks', log_level='WARNING')  # no per-weight init log
    cfg = load_config(args.config, args.cfg_options)
    if args.launcher == 'pytorch':
        init_distributed()
    images = list_images(args.images, args.ann_file, args.img_prefix)
    report = generate_free_masks(cfg, images, args.out, checkpoint=args.checkpoint, device=args.device,
                                 seed=args.seed, max_chunks=args.max_chunks, keep_parts=args.keep_parts,
                                 batch_size=args.batch_size, num_workers=args.num_workers,
                                 chunk_size=args.chunk_size)
    if report is not None:
        print(f'{args.out}: {report["num_annotations"]} masks on {report["num_images_with_masks"]} of '
              f'{report["num_images"]} images; {report["num_skipped"]} unreadable, {report["num_no_mask"]} '
              f'without a mask (see {report_path(args.out)})')


if __name__ == '__main__':
    run_main(main)
