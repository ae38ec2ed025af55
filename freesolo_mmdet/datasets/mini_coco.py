"""A miniature COCO 2017 tree built from the demo scenes, in the exact layout the COCO recipe reads.

Layout written by :func:`make_mini_coco` (file names and image ids as in COCO: ``{id:012d}.jpg``, ids
unique over all three folders)::

    out_dir/train2017/000000000001.jpg ...
    out_dir/unlabeled2017/...                    (ids after the train ids)
    out_dir/val2017/...                          (ids after the unlabeled ids)
    out_dir/annotations/instances_train2017.json
    out_dir/annotations/instances_val2017.json
    out_dir/annotations/image_info_unlabeled2017.json   (images only, as COCO's)

The instance jsons list the 80 COCO categories with their real ids (1..90, ten unused). Every demo
object kind stands for one COCO category (:data:`KIND_TO_CATEGORY`); masks are exact compressed RLE with
their pixel ``area``, a tight XYWH ``bbox`` and ``iscrowd`` 0. Train and unlabeled images are drawn
from the demo's ``train`` scenes (unlabeled ones after the train ones), val images from its ``val``
scenes, so the same seed gives the same tree.
"""
import os
import os.path as osp
from typing import Dict, List

import cv2
import numpy as np

from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic
from mmdet.datasets import CocoDataset
from .demo_scenes import KINDS, SceneConfig, load_cutouts, mask_to_annotation, render_scene

__all__ = ['COCO_CATEGORY_IDS', 'COCO_CATEGORIES', 'KIND_TO_CATEGORY', 'make_mini_coco']

# the ids of the 80 COCO categories, in the order of CocoDataset.METAINFO['classes']
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
COCO_CATEGORIES = tuple(
    dict(id=cat_id, name=name) for cat_id, name in zip(COCO_CATEGORY_IDS, CocoDataset.METAINFO['classes']))
# the COCO category that each demo object kind stands for
KIND_TO_CATEGORY = dict(coin='clock', cup='cup', rocket='airplane', photographer='person', horse='horse')

FOLDERS = ('train2017', 'unlabeled2017', 'val2017')


def _category_ids() -> Dict[str, int]:
    ids = {cat['name']: cat['id'] for cat in COCO_CATEGORIES}
    assert set(KIND_TO_CATEGORY) == set(KINDS)
    return {kind: ids[name] for kind, name in KIND_TO_CATEGORY.items()}


def make_mini_coco(out_dir: str,
                   num_train: int = 10,
                   num_unlabeled: int = 4,
                   num_val: int = 4,
                   image_size: int = 128,
                   seed: int = 0,
                   jpeg_quality: int = 95) -> dict:
    """Write a miniature COCO 2017 tree (layout in the module docstring) to ``out_dir``.

    The default 10 train images are the fewest whose 5% split (the README's fine-tuning,
    ``tools/split_coco.py``, half rounded up) holds an image; ``--percents 1`` needs 50. Existing ``*.jpg``
    in the three image folders are removed first; the same arguments give byte-identical jsons.

    Returns:
        dict: per folder ``num_images`` and ``num_instances`` (0 for unlabeled2017), and ``files``
        (the written jsons).
    """
    counts = dict(zip(FOLDERS, (num_train, num_unlabeled, num_val)))
    if min(counts.values()) < 0 or num_train + num_val == 0:
        raise ValueError(f'need non-negative image counts and some train or val images, got {counts}')
    cfg = SceneConfig(image_size=image_size)
    category_of = _category_ids()
    load_cutouts()  # extracted once, before the first scene
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    info = dict(description=f'mini COCO 2017: FreeSOLO demo scenes, seed {seed}', version='1.0', year=2017)
    licenses = [dict(id=1, name='CC0 1.0 / no known restrictions (scikit-image data)', url='')]
    result, next_id = dict(out_dir=out_dir, files={}), 1
    for folder in FOLDERS:
        os.makedirs(osp.join(out_dir, folder), exist_ok=True)
        for name in os.listdir(osp.join(out_dir, folder)):
            if name.endswith('.jpg'):
                os.remove(osp.join(out_dir, folder, name))
        labeled = folder != 'unlabeled2017'
        split, first = ('val', 0) if folder == 'val2017' else ('train', 0 if labeled else num_train)
        images: List[dict] = []
        annotations: List[dict] = []
        for index in range(first, first + counts[folder]):
            scene = render_scene(seed, split, index, cfg)
            image = dict(license=1, file_name=f'{next_id:012d}.jpg', height=image_size, width=image_size,
                         id=next_id)
            bgr = np.ascontiguousarray(scene.image[..., ::-1])
            path = osp.join(out_dir, folder, image['file_name'])
            if not cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                raise OSError(f'could not write {path!r}')
            images.append(image)
            for paste, mask in (zip(scene.pastes, scene.masks) if labeled else ()):
                annotations.append(dict(id=len(annotations) + 1, image_id=next_id,
                                        category_id=category_of[paste.kind], iscrowd=0,
                                        **mask_to_annotation(mask)))
            next_id += 1
        if not labeled:
            content = dict(info=info, licenses=licenses, images=images, categories=list(COCO_CATEGORIES))
            path = osp.join(ann_dir, 'image_info_unlabeled2017.json')
        else:
            content = dict(info=info, licenses=licenses, images=images, annotations=annotations,
                           categories=list(COCO_CATEGORIES))
            path = osp.join(ann_dir, f'instances_{folder}.json')
        dump_json_atomic(content, path)
        result['files'][folder] = path
        result[folder] = dict(num_images=len(images), num_instances=len(annotations))
    return result
