"""Class-agnostic masks to COCO json: RLE, tight XYWH boxes, scores and embeddings.

Shared by the Free Mask tool and the self-training pseudo-label tool. Files are written
atomically (temporary file, then rename), so a killed job never leaves a half-written json.
"""
import contextlib
import json
import os
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, TextIO

import cv2
import numpy as np
import pycocotools.mask as mask_util

__all__ = [
    'OBJECT_CATEGORIES', 'mask_to_rle', 'masks_to_coco_annotations', 'atomic_open', 'dump_json_atomic',
    'merge_coco_parts'
]

#: the single class-agnostic category
OBJECT_CATEGORIES = [dict(id=1, name='object', supercategory='object')]

_SEPARATORS = (',', ':')


def _numpy(array) -> np.ndarray:
    """Tensor (any device) or array-like -> numpy array; a CPU tensor's memory is shared, not copied."""
    if hasattr(array, 'detach'):
        array = array.detach().cpu()
    return np.asarray(array)


def mask_to_rle(mask: np.ndarray) -> dict:
    """(h, w) binary mask -> compressed COCO RLE with ``counts`` as str (json-ready).

    pycocotools reads column-major uint8: a C-ordered bool mask is transposed by OpenCV (about 15x
    faster than numpy's strided copy on a 48-megapixel mask), other masks by ``np.asfortranarray``.
    """
    if mask.dtype == bool and mask.ndim == 2 and mask.flags['C_CONTIGUOUS'] and mask.size:
        fortran = cv2.transpose(mask.view(np.uint8)).T
    else:
        fortran = np.asfortranarray(mask, dtype=np.uint8)
    rle = mask_util.encode(fortran)
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def masks_to_coco_annotations(masks,
                              scores,
                              image_id: int,
                              embs=None,
                              start_id: int = 1,
                              category_id: int = 1,
                              decimals: Optional[int] = 6) -> List[dict]:
    """COCO annotations of one image's masks.

    Args:
        masks: (n, h, w) binary masks (numpy or tensor). Read one at a time: a bool array or
            CPU tensor is not copied (other dtypes are converted mask by mask), so the only
            full-resolution copy is one mask's Fortran-ordered uint8 for RLE encoding.
        scores: (n, ) scores.
        image_id (int): COCO image id.
        embs: (n, D) embeddings, or None for annotations without ``emb``.
        start_id (int): id of the first annotation; ids increase by one.
        category_id (int): category of every annotation.
        decimals (int, optional): round ``score`` and ``emb`` to this many decimals
            (keeps dataset-scale files small); None keeps full float precision.

    Returns:
        list[dict]: ``id, image_id, category_id, segmentation`` (RLE), ``bbox`` (tight
        XYWH), ``area`` (pixel count), ``score``, ``iscrowd=0`` and ``emb`` (if given).
        Empty masks have no box and are skipped.
    """
    masks = _numpy(masks)
    scores = _numpy(scores).astype(float)
    embs = None if embs is None else _numpy(embs).astype(float)
    if len(scores) != len(masks) or (embs is not None and len(embs) != len(masks)):
        raise ValueError(f'{len(masks)} masks but {len(scores)} scores'
                         + ('' if embs is None else f' and {len(embs)} embeddings'))

    def rounded(value):
        return np.round(value, decimals) if decimals is not None else value

    annotations = []
    for i, mask in enumerate(masks):
        if mask.dtype != bool:
            mask = mask.astype(bool)
        if not mask.any():
            continue
        rle = mask_to_rle(mask)
        ann = dict(
            id=start_id + len(annotations),
            image_id=int(image_id),
            category_id=category_id,
            segmentation=rle,
            bbox=[float(v) for v in mask_util.toBbox(rle)],
            area=int(mask_util.area(rle)),
            score=float(rounded(scores[i])),
            iscrowd=0)
        if embs is not None:
            ann['emb'] = rounded(embs[i]).tolist()
        annotations.append(ann)
    return annotations


@contextlib.contextmanager
def atomic_open(path: str) -> Iterator[TextIO]:
    """Open ``path`` for text writing; it appears (by rename) only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix='.tmp_', suffix='.json')
    try:
        with os.fdopen(fd, 'w') as f:
            yield f
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


def dump_json_atomic(obj, path: str) -> None:
    """Write ``obj`` as compact json to ``path`` atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, separators=_SEPARATORS)


def merge_coco_parts(part_paths: Sequence[str], out_path: str,
                     categories: Optional[Iterable[dict]] = None) -> dict:
    """Merge partial COCO files into one, renumbering annotations 1..N in part order.

    Streams: only one part is in memory at a time (parts are read twice: images, then
    annotations), so a dataset-scale merge needs memory for one part, not the whole file.
    The output is a deterministic function of the parts' contents and order.

    Args:
        part_paths (Sequence[str]): json files with ``images`` and ``annotations`` lists.
        out_path (str): merged file, written atomically.
        categories (Iterable[dict], optional): defaults to the single ``object`` category.

    Returns:
        dict: ``num_images`` and ``num_annotations`` of the merged file.

    Raises:
        ValueError: an image id occurs twice.
    """
    categories = list(categories or OBJECT_CATEGORIES)
    image_ids, num_annotations = set(), 0
    with atomic_open(out_path) as f:
        f.write('{"images":[')
        for path in part_paths:
            for image in _load(path)['images']:
                if image['id'] in image_ids:
                    raise ValueError(f'image id {image["id"]} occurs twice (again in {path})')
                f.write((',' if image_ids else '') + json.dumps(image, separators=_SEPARATORS))
                image_ids.add(image['id'])
        f.write('],"annotations":[')
        for path in part_paths:
            for ann in _load(path)['annotations']:
                num_annotations += 1
                ann['id'] = num_annotations
                f.write((',' if num_annotations > 1 else '') + json.dumps(ann, separators=_SEPARATORS))
        f.write('],"categories":' + json.dumps(categories, separators=_SEPARATORS) + '}')
    return dict(num_images=len(image_ids), num_annotations=num_annotations)


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
