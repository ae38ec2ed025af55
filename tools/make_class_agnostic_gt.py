"""Collapse every category of a COCO instances json into one, ``object`` (id 1).

All images and annotations are kept with their ids; only ``category_id`` changes.
Evaluating the result with per-category COCO AP equals class-agnostic evaluation
(pycocotools ``useCats = 0``) of the original file.

Example::

    python tools/make_class_agnostic_gt.py \
        data/coco/annotations/instances_val2017.json \
        data/coco/annotations/instances_val2017_agnostic.json
"""
import argparse
import json
import os.path as osp
from collections import Counter
from typing import List, Optional

__all__ = ['load_coco_json', 'make_class_agnostic', 'main']


def load_coco_json(path: str) -> dict:
    """Read a COCO instances json; clear errors for a missing, corrupt or
    non-COCO file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'no such COCO json: {path}')
    with open(path) as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path} is not valid JSON ({e})') from e
    if not isinstance(coco, dict) or not {'images', 'annotations'} <= set(coco):
        raise ValueError(f'{path} is not a COCO instances json: it needs '
                         '"images" and "annotations"')
    return coco


def make_class_agnostic(coco: dict, name: str = 'object') -> dict:
    """A copy of ``coco`` whose only category is ``{id: 1, name}``."""
    annotations = [dict(ann, category_id=1) for ann in coco['annotations']]
    return dict(
        coco,
        annotations=annotations,
        categories=[dict(id=1, name=name, supercategory=name)])


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_json', help='COCO instances json')
    parser.add_argument('out_json', help='one-category json to write')
    parser.add_argument('--name', default='object', help='category name')
    args = parser.parse_args(argv)
    if osp.abspath(args.in_json) == osp.abspath(args.out_json):
        parser.error('out_json must differ from in_json')
    coco = load_coco_json(args.in_json)
    agnostic = make_class_agnostic(coco, args.name)
    with open(args.out_json, 'w') as f:
        json.dump(agnostic, f)
    per_cat = Counter(ann.get('category_id') for ann in coco['annotations'])
    print(f'{len(coco["images"])} images, {len(coco["annotations"])} '
          f'annotations: {len(coco.get("categories", []))} categories '
          f'({len(per_cat)} used) -> 1 "{args.name}"; wrote {args.out_json}')
    return agnostic


if __name__ == '__main__':
    main()
