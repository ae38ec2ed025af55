"""Up-front check of a mask proposal file: every entry is looked at once, when the dataset is built.

A bad entry (unknown image, missing or malformed segmentation, RLE whose runs do not cover the image,
size that disagrees with its image, missing or differently sized image file) is reported with its
reason and skipped, so that it never surfaces in the middle of training. RLE strings are parsed here
(numpy, no decoding), because ``pycocotools.mask.decode`` writes past its buffer on runs that sum to
more than ``height * width``.
"""
import math
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ['rle_counts', 'check_segmentation', 'check_image_file', 'check_proposals', 'summarize_bad_entries']

#: chunks of one value in a compressed RLE string (60 bits: far more than any image has pixels)
MAX_CHUNKS = 12


def rle_counts(counts: Union[str, bytes]) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (pycocotools' format).

    The string holds one signed integer per run, 5 bits per character (offset 48; bit 0x20 = more
    characters follow, bit 0x10 of the last = negative); from the fourth run on, each value is a
    difference to the run two places before.

    Returns:
        ndarray: (R, ) int64 run lengths (alternately background and mask, background first).

    Raises:
        ValueError: characters outside the format, or a truncated or oversized value.
    """
    if isinstance(counts, str):
        try:
            counts = counts.encode('ascii')
        except UnicodeEncodeError:
            raise ValueError('RLE counts are not ASCII') from None
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, np.int64)
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError('RLE counts hold characters outside the compressed-RLE alphabet')
    last = (chars & 0x20) == 0  # the last character of each value
    if not last[-1]:
        raise ValueError('RLE counts end in the middle of a value')
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > MAX_CHUNKS:
        raise ValueError('RLE counts hold a value too large for any image')
    position = np.arange(chars.size) - np.repeat(starts, lengths)  # chunk index within its value
    values = np.add.reduceat((chars & 0x1f) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << np.minimum(5 * lengths, 62)), values)
    runs = values.copy()
    for parity in (1, 2):  # runs[m] = values[m] + runs[m - 2] for m >= 3
        runs[parity::2] = np.cumsum(values[parity::2])
    return runs


def _check_polygons(polygons: list) -> Optional[str]:
    if not polygons:
        return 'invalid polygons: empty list'
    for poly in polygons:
        if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
            return 'invalid polygons: fewer than 3 points or an odd number of coordinates'
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
            return 'invalid polygons: a non-numeric or non-finite coordinate'
    return None


def check_segmentation(segmentation, height: int, width: int) -> Optional[str]:
    """Why a COCO ``segmentation`` cannot be a (height, width) mask, or None when it can.

    Polygons, uncompressed RLE (``counts`` a list) and compressed RLE (``counts`` a string) are
    checked: sizes equal to the image's, runs non-negative and summing to ``height * width``.
    """
    if isinstance(segmentation, list):
        return _check_polygons(segmentation)
    if not isinstance(segmentation, dict) or 'counts' not in segmentation or 'size' not in segmentation:
        return f'unsupported segmentation: neither polygons nor RLE: {str(segmentation)[:60]}'
    size = segmentation['size']
    if not isinstance(size, (list, tuple)) or len(size) != 2 or [int(s) for s in size] != [height, width]:
        return f'RLE size differs from the image size: {size} vs [{height}, {width}]'
    counts = segmentation['counts']
    if isinstance(counts, list):
        if not all(isinstance(c, (int, np.integer)) for c in counts):
            return 'invalid RLE: non-integer counts'
        runs = np.asarray(counts, np.int64)
    elif isinstance(counts, (str, bytes)):
        try:
            runs = rle_counts(counts)
        except ValueError as e:
            return f'invalid RLE: {e}'
    else:
        return f'invalid RLE: counts of type {type(counts).__name__}'
    if runs.size and runs.min() < 0:
        return 'invalid RLE: negative run length'
    total = int(runs.sum())
    if total != height * width:
        return f'invalid RLE: runs cover {total} pixels, the image has {height * width}'
    return None


def check_image_file(path: str, height: int, width: int, check_size: bool = True) -> Optional[str]:
    """Why the image at ``path`` does not fit (missing, unreadable header, other size), or None.

    Only the header is read (PIL opens lazily), so checking every image of a large set is cheap.
    """
    if not osp.isfile(path):
        return f'image file not found: {path}'
    if not check_size:
        return None
    from PIL import Image
    try:
        with Image.open(path) as img:
            file_width, file_height = img.size
    except Exception as e:  # PIL raises several types for broken files
        return f'unreadable image: {path}: {e}'
    if (file_height, file_width) != (height, width):
        return f'image size differs: {path} is {file_height}x{file_width}, the proposal file says {height}x{width}'
    return None


def check_proposals(images: Sequence[dict],
                    annotations: Sequence[dict],
                    img_dir: Optional[str] = None,
                    check_image_size: bool = True) -> Tuple[Dict[int, dict], Dict[int, List[dict]], List[dict]]:
    """Check every image entry and every annotation of a proposal file.

    Args:
        images (list[dict]): COCO ``images`` (``id``, ``file_name``, ``height``, ``width``).
        annotations (list[dict]): COCO annotations with ``image_id`` and ``segmentation``.
        img_dir (str, optional): Folder of the images; None skips the file checks.
        check_image_size (bool): Compare each file's size (its header) with its entry.

    Returns:
        tuple: good images by id; good annotations by image id (every good image has a list); and the
        bad entries, each ``dict(image_id, ann_id, file_name, reason)`` (``ann_id`` None for an image
        entry; its annotations are then skipped without entries of their own).
    """
    bad: List[dict] = []
    good_images: Dict[int, dict] = {}
    for info in images:
        img_id, file_name = info.get('id'), info.get('file_name')
        reason = None
        if img_id is None or not isinstance(file_name, str):
            reason = 'invalid image entry: no id or file_name'
        elif not all(isinstance(info.get(k), int) and info[k] > 0 for k in ('height', 'width')):
            reason = f'invalid image entry: height and width must be positive integers, got {info.get("height")}, ' \
                     f'{info.get("width")}'
        elif img_id in good_images:
            reason = 'invalid image entry: duplicate image id'
        elif img_dir is not None:
            reason = check_image_file(osp.join(img_dir, file_name), info['height'], info['width'],
                                      check_image_size)
        if reason is None:
            good_images[img_id] = info
        else:
            bad.append(dict(image_id=img_id, ann_id=None, file_name=file_name, reason=reason))
    bad_image_ids = {entry['image_id'] for entry in bad}
    by_image: Dict[int, List[dict]] = {img_id: [] for img_id in good_images}
    for ann in annotations:
        img_id = ann.get('image_id')
        if img_id in bad_image_ids:
            continue  # reported with its image
        info = good_images.get(img_id)
        if info is None:
            reason = f'unknown image id: {img_id}'
        elif 'segmentation' not in ann:
            reason = 'no segmentation'
        elif not isinstance(ann.get('score', 1.0), (int, float)):
            reason = f'invalid score: {ann.get("score")!r}'
        else:
            reason = check_segmentation(ann['segmentation'], info['height'], info['width'])
        if reason is None:
            by_image[img_id].append(ann)
        else:
            bad.append(dict(image_id=img_id, ann_id=ann.get('id'),
                            file_name=info['file_name'] if info else None, reason=reason))
    return good_images, by_image, bad


def summarize_bad_entries(bad: Sequence[dict], source: str, max_listed: int = 20) -> str:
    """A report of the bad entries: their count, counts per kind of reason (the text before its first colon),
    and the first ``max_listed`` entries with their whole reason."""
    kinds = Counter(entry['reason'].split(':')[0] for entry in bad)
    lines = [f'{source}: skipped {len(bad)} bad entries '
             f'({sum(e["ann_id"] is None for e in bad)} images, {sum(e["ann_id"] is not None for e in bad)} masks): '
             + ', '.join(f'{n} x {kind}' for kind, n in kinds.most_common())]
    for entry in bad[:max_listed]:
        what = f'image {entry["image_id"]}' if entry['ann_id'] is None else \
            f'annotation {entry["ann_id"]} of image {entry["image_id"]}'
        lines.append(f'  {what} ({entry["file_name"]}): {entry["reason"]}')
    if len(bad) > max_listed:
        lines.append(f'  ... and {len(bad) - max_listed} more')
    return '\n'.join(lines)
