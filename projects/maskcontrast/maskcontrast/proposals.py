"""Class-agnostic mask proposals (FreeSOLO Free Masks or pseudo labels) from a COCO json.

MaskContrast needs, per image, a set of **non-overlapping** object masks. FreeSOLO writes
overlapping instance masks with a ``score``; they are painted here in increasing score order,
so where two proposals overlap the higher-scoring one owns the pixel. The result is a label map:
0 = no proposal (background), ``i >= 1`` = the i-th kept proposal.
"""
import json
import os.path as osp
from typing import Dict, List, Optional, Union

import numpy as np
import pycocotools.mask as mask_utils

from .proposal_check import check_proposals

__all__ = ['decode_segmentation', 'load_coco_json', 'MaskProposals']


def decode_segmentation(segmentation: Union[dict, list], height: int, width: int) -> np.ndarray:
    """COCO ``segmentation`` (RLE with str/bytes counts, uncompressed RLE or polygons) ->
    (height, width) bool mask."""
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get('counts'), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE
    elif isinstance(segmentation, dict) and 'counts' in segmentation:
        counts = segmentation['counts']
        rle = dict(size=segmentation['size'], counts=counts.encode('ascii') if isinstance(counts, str) else counts)
    else:
        raise ValueError(f'unsupported COCO segmentation: {str(segmentation)[:80]}')
    mask = mask_utils.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f'segmentation of size {mask.shape} does not fit the image ({height}, {width})')
    return mask


def load_coco_json(path: str, what: str = 'annotation file') -> dict:
    """Read a COCO json with a clear error when it is missing or malformed."""
    if not path or not osp.isfile(path):
        raise FileNotFoundError(
            f'{what} not found: {path!r}. For the demo, `make demo` (or tools/generate_free_masks.py '
            'configs/demo/free_mask_demo.py --images data/demo/train --out work_dirs/demo/free_masks.json) '
            'writes the Free Masks, and tools/make_demo_data.py --out data/demo the images and ground truth.')
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{what} {path} is not valid json: {e}') from e
    return data


class MaskProposals:
    """Per-image proposals of a COCO json, checked up front, as label maps.

    Two layouts are read: dataset-style (``{'images': [...], 'annotations': [...]}``, what
    FreeSOLO's tools write) and results-style (a list of annotations), which then needs
    ``image_file`` (a COCO json whose ``images`` give file names and sizes).

    Every entry is checked when the file is read (:func:`check_proposals`: segmentation format, RLE
    runs, sizes and, with ``img_dir``, the image files); bad entries are skipped and listed in
    :attr:`bad_entries` with their reason.

    Args:
        proposal_file (str): The json of class-agnostic masks.
        image_file (str, optional): Image list for a results-style ``proposal_file``.
        min_score (float): Drop proposals with a lower ``score`` (annotations without one pass).
        min_area (int): Drop proposals with fewer pixels (before overlap resolution).
        max_per_image (int): Keep at most this many (highest score first).
        img_dir (str, optional): Folder of the images; the files are then checked too.
        check_image_size (bool): With ``img_dir``, compare each file's size (header only) with its entry.
    """

    def __init__(self,
                 proposal_file: str,
                 image_file: Optional[str] = None,
                 min_score: float = 0.0,
                 min_area: int = 16,
                 max_per_image: int = 20,
                 img_dir: Optional[str] = None,
                 check_image_size: bool = True) -> None:
        data = load_coco_json(proposal_file, 'mask proposal file')
        if isinstance(data, list):
            if image_file is None:
                raise ValueError(f'{proposal_file} is a results-style list of masks; pass image_file= '
                                 '(a COCO json whose `images` name the files) as well')
            images = load_coco_json(image_file, 'image list').get('images', [])
            annotations = data
        elif isinstance(data, dict) and 'annotations' in data and 'images' in data:
            images, annotations = data['images'], data['annotations']
        else:
            raise ValueError(f'{proposal_file}: expected a COCO json with `images` and `annotations`')
        self.proposal_file = proposal_file
        self.min_score, self.min_area, self.max_per_image = min_score, min_area, max_per_image
        self.images, checked, self.bad_entries = check_proposals(images, annotations, img_dir, check_image_size)
        self.by_image: Dict[int, List[dict]] = {
            img_id: [ann for ann in anns if ann.get('score', 1.0) >= min_score] for img_id, anns in checked.items()
        }
        self.num_checked = dict(images=len(images), annotations=len(annotations))
        if not any(self.by_image.values()):
            raise ValueError(f'{proposal_file}: no usable mask proposals (min_score={min_score}, '
                             f'{len(self.bad_entries)} bad entries skipped)')

    def image_ids(self, with_masks_only: bool = True) -> List[int]:
        """Ids of the images, by default only those with at least one proposal."""
        return [i for i in self.images if self.by_image[i] or not with_masks_only]

    def label_map(self, image_id: int) -> np.ndarray:
        """(H, W) uint8 map of one image: 0 = none, k = k-th proposal; higher score wins overlaps."""
        info = self.images[image_id]
        height, width = info['height'], info['width']
        anns = sorted(self.by_image[image_id], key=lambda a: -a.get('score', 1.0))
        masks = [decode_segmentation(a['segmentation'], height, width) for a in anns]
        masks = [m for m in masks if m.sum() >= self.min_area][:self.max_per_image]
        label = np.zeros((height, width), np.uint8)
        for k in range(len(masks), 0, -1):  # lowest score first, the best painted last
            label[masks[k - 1]] = k
        return label
