"""Training labels of the pipeline's rounds: the confident Free Masks (round 1), and for multi-round
self-training (spec section 7, CutLER) a round's confident predictions plus the earlier labels that no new
prediction covers.

Both inputs and the output are in the Free Mask json format (:mod:`freesolo_mmdet.free_mask.coco_writer`):
RLE masks, ``score``, ``emb``, one ``object`` category; images are matched by ``file_name``.
"""
import copy
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util

__all__ = ['labels_with_min_score', 'merge_pseudo_labels']


def _rles(annotations: List[dict]) -> List[dict]:
    return [dict(size=a['segmentation']['size'], counts=a['segmentation']['counts'].encode('ascii')
                 if isinstance(a['segmentation']['counts'], str) else a['segmentation']['counts'])
            for a in annotations]


def labels_with_min_score(labels: dict, min_score: float) -> dict:
    """A copy of ``labels`` (COCO dict) with the annotations whose ``score`` is at least ``min_score`` (an
    annotation without one counts as 1.0, as :class:`~freesolo_mmdet.datasets.CoarseMaskCocoDataset` reads it);
    every image stays listed, with ``info.min_score`` recording the filter."""
    annotations = [a for a in labels['annotations'] if a.get('score', 1.0) >= min_score]
    selected = dict(labels, annotations=annotations)
    selected['info'] = dict(labels.get('info') or {}, min_score=min_score)
    return selected


def _by_file(labels: dict) -> Dict[str, List[dict]]:
    """``{file_name: [annotation, ...]}`` of a COCO dict (images without annotations left out)."""
    names = {image['id']: image['file_name'] for image in labels['images']}
    by_file: Dict[str, List[dict]] = defaultdict(list)
    for annotation in labels['annotations']:
        by_file[names[annotation['image_id']]].append(annotation)
    return by_file


def _max_ious(masks: List[dict], others: List[dict]) -> np.ndarray:
    """(len(masks), ) each mask's highest IoU with ``others`` (0 where there is none)."""
    if not masks or not others:
        return np.zeros(len(masks))
    return np.asarray(mask_util.iou(_rles(masks), _rles(others), [0] * len(others))).reshape(
        len(masks), len(others)).max(axis=1)


def merge_pseudo_labels(new: dict, old: dict, iou_thr: float = 0.5, unlisted_images: str = 'keep',
                        support: Optional[dict] = None) -> dict:
    """``new``'s labels, plus each label of ``old`` whose mask IoU with every new label of its image is
    below ``iou_thr`` (and, with ``support``, that one of the support masks overlaps at least that much).

    Args:
        new (dict): this round's pseudo labels (COCO dict). Pseudo-label files list only the images with
            a kept mask.
        old (dict): the labels the round was trained on.
        iou_thr (float): an old label is kept only if no new label overlaps it this much.
        unlisted_images (str): the images of ``old`` that ``new`` does not list. ``'keep'`` (the spec's
            merge: no new label overlaps their labels): they keep all their labels. ``'drop'``: they leave
            the labels, so that only images where the round found an object are trained on.
        support (dict, optional): the round's less confident predictions (COCO dict, images matched by file
            name). Given, an old label is kept only where one of them overlaps it with IoU >= ``iou_thr``: the
            model still sees an object there, too unsure of it for a pseudo label. None (the spec): no such
            condition.

    Returns:
        dict: the merged labels: ``new``'s images, then (``'keep'``) ``old``'s images with labels that
        ``new`` does not list (an id that ``new`` uses moves past both files' ids); annotation ids 1..N in
        image order (new labels first in each image); ``info.merged`` counts the old labels kept (and, with
        ``support``, ``old_labels_unsupported``: those without support, left out whether or not a new label
        covers them).
    """
    if unlisted_images not in ('keep', 'drop'):
        raise ValueError(f"unlisted_images must be 'keep' or 'drop', got {unlisted_images!r}")
    old_by_file = _by_file(old)
    unsupported = 0
    if support is not None:
        support_by_file = _by_file(support)
        for file_name, earlier in old_by_file.items():
            supported = [a for a, best in zip(earlier, _max_ious(earlier, support_by_file.get(file_name, [])))
                         if best >= iou_thr]
            unsupported += len(earlier) - len(supported)
            old_by_file[file_name] = supported
    new_by_image: Dict[int, List[dict]] = defaultdict(list)
    for annotation in new['annotations']:
        new_by_image[annotation['image_id']].append(annotation)

    images = list(new['images'])
    listed = {image['file_name'] for image in images}
    taken = {image['id'] for image in images}
    next_id = max([image['id'] for image in images + old['images']], default=0) + 1  # no id of either file
    for image in old['images'] if unlisted_images == 'keep' else []:
        if image['file_name'] in listed or not old_by_file.get(image['file_name']):
            continue
        image = dict(image)
        if image['id'] in taken:
            image['id'], next_id = next_id, next_id + 1
        taken.add(image['id'])
        images.append(image)

    annotations, kept = [], 0
    for image in images:
        fresh = new_by_image[image['id']]
        earlier = old_by_file.get(image['file_name'], [])
        earlier = [a for a, best in zip(earlier, _max_ious(earlier, fresh)) if best < iou_thr]
        kept += len(earlier)
        for annotation in fresh + earlier:
            annotation = copy.deepcopy(annotation)
            annotation.update(id=len(annotations) + 1, image_id=image['id'])
            annotations.append(annotation)
    merged = dict(new, images=images, annotations=annotations)
    info = dict(old_labels_kept=kept, iou_thr=iou_thr, unlisted_images=unlisted_images)
    if support is not None:
        info['old_labels_unsupported'] = unsupported
    merged['info'] = dict(new.get('info') or {}, merged=info)
    return merged
