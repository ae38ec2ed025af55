"""Write the offline demo dataset: composite scenes with exact instance masks.

    python tools/make_demo_data.py --out data/demo --num-train 300 \
        --num-val 50 --size 320 --seed 0
"""
import argparse
import os.path as osp
import sys
import time

from freesolo_mmdet.datasets.demo_scenes import disk_usage, make_demo_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='output folder')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=320,
                        help='side of the square images, in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--min-objects', type=int, default=2)
    parser.add_argument('--max-objects', type=int, default=6)
    parser.add_argument('--no-progress', action='store_true')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        result = make_demo_dataset(
            args.out, num_train=args.num_train, num_val=args.num_val,
            image_size=args.size, seed=args.seed,
            min_objects=args.min_objects, max_objects=args.max_objects,
            progress=not args.no_progress)
    except (ValueError, OSError) as error:
        sys.exit(f'error: {error}')
    seconds = time.perf_counter() - start
    for split in ('train', 'val'):
        print(f'{split}: {result[split]["num_images"]} images, '
              f'{result[split]["num_instances"]} instances in '
              f'{osp.join(args.out, split)}')
    for path in result['files'].values():
        print(f'wrote {path}')
    print(f'object kinds: {", ".join(result["kinds"])}')
    print(f'{disk_usage(args.out) / 2**20:.1f} MiB on disk, '
          f'{seconds:.1f} s')


if __name__ == '__main__':
    main()
