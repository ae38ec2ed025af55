"""Write a miniature COCO 2017 tree (train2017/, unlabeled2017/, val2017/, annotations/) of demo scenes.

    python tools/make_mini_coco.py --out data/coco --num-train 10 --num-unlabeled 4 --num-val 4 --size 128

It has COCO's folder and file names, image ids and 80 category ids, so the README's COCO recipe runs
on it unchanged (tests/test_coco_recipe.py does). See freesolo_mmdet/datasets/mini_coco.py.
"""
import argparse
import sys

from freesolo_mmdet.datasets.mini_coco import FOLDERS, make_mini_coco


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/coco', help='output folder (the COCO data root)')
    parser.add_argument('--num-train', type=int, default=10, help='images in train2017/ (annotated)')
    parser.add_argument('--num-unlabeled', type=int, default=4, help='images in unlabeled2017/')
    parser.add_argument('--num-val', type=int, default=4, help='images in val2017/ (annotated)')
    parser.add_argument('--size', type=int, default=128, help='side of the square images, in pixels')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        result = make_mini_coco(args.out, num_train=args.num_train, num_unlabeled=args.num_unlabeled,
                                num_val=args.num_val, image_size=args.size, seed=args.seed)
    except (ValueError, OSError) as error:
        sys.exit(f'error: {error}')
    for folder in FOLDERS:
        print(f'{folder}: {result[folder]["num_images"]} images, {result[folder]["num_instances"]} instances '
              f'(annotations: {result["files"][folder]})')
    return result


if __name__ == '__main__':
    main()
