"""Write the held-out development benchmark: composite scenes with exact
instance masks, made from object kinds and textures the demo does not use.

    python tools/make_heldout_data.py --out data/heldout --num-images 60 \
        --seed 0
"""
import argparse
import os.path as osp
import sys
import time

from freesolo_mmdet.datasets.demo_scenes import disk_usage
from freesolo_mmdet.datasets.heldout_scenes import HeldoutConfig, make_heldout_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/heldout', help='output folder')
    parser.add_argument('--num-images', type=int, default=60)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--min-side', type=int, default=256,
                        help='smallest image width or height, in pixels')
    parser.add_argument('--max-side', type=int, default=640,
                        help='largest image width or height, in pixels')
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        cfg = HeldoutConfig(side_range=(args.min_side, args.max_side))
        result = make_heldout_dataset(
            args.out, num_images=args.num_images, seed=args.seed, cfg=cfg,
            progress=not args.no_progress)
    except (ValueError, OSError) as error:
        sys.exit(f'error: {error}')
    seconds = time.perf_counter() - start
    print(f'{result["num_images"]} images ({result["num_grey"]} grayscale, '
          f'{result["num_crowd"]} crowded), {result["num_instances"]} '
          f'instances in {osp.join(args.out, "images")}')
    print('instances per image: {} to {}'.format(
        *result['instances_per_image']))
    print('image width: {} to {}, height: {} to {}'.format(
        *result['widths'], *result['heights']))
    for path in result['files'].values():
        print(f'wrote {path}')
    print(f'object kinds: {", ".join(result["kinds"])}')
    print(f'{disk_usage(args.out) / 2**20:.1f} MiB on disk, '
          f'{seconds:.1f} s')


if __name__ == '__main__':
    main()
