"""Few-label splits of a COCO json: a labeled percentage of its images.

For each fold k (1..--folds) and percent p it writes ``<prefix>.<k>@<p>.json``
(and, with ``--unlabeled``, ``<prefix>.<k>@<p>-unlabeled.json`` with all other
images), the names mmdet's semi-supervised configs read, e.g.
``instances_train2017.1@5.json``. Every annotation follows its image; all other
keys (categories, info, licenses) are copied.

Sampling: the images (sorted by id) are shuffled once per fold with
``numpy.random.default_rng([seed, fold])``; a p% split is the first
``round(p / 100 * N)`` images (half rounds up) of that order. So:

- no image is drawn twice, and the size is exact;
- splits are deterministic for (json image ids, seed, fold), independent of
  the json's image order; other folds or seeds give other splits;
- within a fold the splits are nested (1% in 2% in 5% in 10%): a run with
  more labels only adds images, so differences between label fractions are
  not blurred by a different draw. Folds give independent repetitions.

Differences from mmdet's ``tools/misc/split_coco.py``: it draws
``np.random.choice(N, size=int(p / 100 * N))`` with replacement, so a split
holds fewer distinct images than asked (about 5% fewer at 10% of COCO); it
truncates instead of rounding; it draws each percent independently (1% is not
inside 5%); it seeds numpy's global state with the fold; it only reads
``annotations/instances_train2017.json``; a percent given on its command line
is a float and names the file ``...1@10.0.json``, which its configs do not read.

Example::

    python tools/split_coco.py data/coco/annotations/instances_train2017.json \
        --out-dir data/coco/semi_anns --percents 1 2 5 10 --folds 1
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_class_agnostic_gt import load_coco_json  # noqa: E402

__all__ = ['labeled_image_ids', 'subset', 'main']


def labeled_image_ids(image_ids: Sequence[int], percents: Sequence[float],
                      seed: int = 0, fold: int = 1) -> Dict[float, List[int]]:
    """Nested labeled image ids per percent, drawn without replacement."""
    if len(set(image_ids)) != len(image_ids):
        raise ValueError('the json holds duplicate image ids')
    order = np.random.default_rng([seed, fold]).permutation(sorted(image_ids))
    splits = {}
    for pct in percents:
        num = math.floor(pct * len(image_ids) / 100 + 0.5)
        if not 0 < pct <= 100 or num == 0:
            raise ValueError(f'{pct}% of {len(image_ids)} images is not a '
                             'split with at least one image')
        splits[pct] = order[:num].tolist()
    return splits


def subset(coco: dict, image_ids: Sequence[int]) -> dict:
    """``coco`` restricted to ``image_ids`` and their annotations."""
    keep = set(image_ids)
    return dict(
        coco,
        images=[img for img in coco['images'] if img['id'] in keep],
        annotations=[a for a in coco['annotations'] if a['image_id'] in keep])


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Write the splits; returns the written paths."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ann_file', help='COCO instances json to split')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--prefix', help='default: ann_file name w/o .json')
    parser.add_argument(
        '--percents', type=float, nargs='+', default=[1, 2, 5, 10])
    parser.add_argument('--folds', type=int, default=1,
                        help='number of folds, named 1..folds')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--unlabeled', action='store_true',
                        help='also write the remaining images as '
                        '<prefix>.<fold>@<pct>-unlabeled.json')
    args = parser.parse_args(argv)
    coco = load_coco_json(args.ann_file)
    prefix = args.prefix or osp.basename(args.ann_file).removesuffix('.json')
    all_ids = [img['id'] for img in coco['images']]
    num_orphans = len({a['image_id'] for a in coco['annotations']} -
                      set(all_ids))
    if num_orphans:
        print(f'warning: annotations of {num_orphans} image ids that are not '
              'in "images" are left out of every split')
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for fold in range(1, args.folds + 1):
        splits = labeled_image_ids(all_ids, args.percents, args.seed, fold)
        for pct, ids in splits.items():
            name = osp.join(args.out_dir, f'{prefix}.{fold}@{pct:g}')
            outputs = [(f'{name}.json', ids)]
            if args.unlabeled:
                rest = set(all_ids) - set(ids)
                outputs.append((f'{name}-unlabeled.json', rest))
            for path, image_ids in outputs:
                part = subset(coco, image_ids)
                with open(path, 'w') as f:
                    json.dump(part, f)
                written.append(path)
                print(f'{path}: {len(part["images"])} images, '
                      f'{len(part["annotations"])} annotations')
    return written


if __name__ == '__main__':
    main()
