"""Datasets: two-view training on mask proposals, and semantic ground truth for evaluation.

Images are returned as float32 RGB tensors in [0, 255] of shape (3, H, W); the model normalises.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmdet.registry import DATASETS
from torch.utils.data import Dataset

from .proposals import MaskProposals, decode_segmentation, load_coco_json
from .transforms import TwoViewTransform

__all__ = ['read_rgb', 'MaskProposalDataset', 'SemanticSegDataset', 'collate_two_views']


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB image; a clear error for a missing or unreadable file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'cannot decode image: {path}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@DATASETS.register_module()
class MaskProposalDataset(Dataset):
    """Images with FreeSOLO mask proposals, each item two augmented views.

    Args:
        img_dir (str): Folder of the images (``file_name`` of the json is relative to it).
        proposal_file (str): COCO json of class-agnostic masks (Free Masks or pseudo labels).
        image_file (str, optional): Image list when ``proposal_file`` is results-style.
        transform (dict): Arguments of :class:`TwoViewTransform`.
        min_score, min_area, max_per_image: Proposal filters, see :class:`MaskProposals`.
        cache (bool): Keep decoded images and label maps in memory.
        seed (int): Base seed; item ``i`` of epoch ``e`` draws from ``(seed, e, i)``.

    Item: ``dict(img1=(3, S, S) float, label1=(S, S) long, img2=..., label2=...)``, labels
    0 = no proposal and ``k`` = proposal ``k`` (the same ``k`` in both views).
    """

    def __init__(self,
                 img_dir: str,
                 proposal_file: str,
                 image_file: Optional[str] = None,
                 transform: Optional[dict] = None,
                 min_score: float = 0.0,
                 min_area: int = 16,
                 max_per_image: int = 20,
                 cache: bool = True,
                 seed: int = 0) -> None:
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'image folder not found: {img_dir!r}')
        self.img_dir = img_dir
        self.proposals = MaskProposals(proposal_file, image_file, min_score, min_area, max_per_image)
        self.ids = self.proposals.image_ids(with_masks_only=True)
        self.transform = TwoViewTransform(**(transform or {}))
        self.cache: Optional[Dict[int, tuple]] = {} if cache else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int):
        """(H, W, 3) uint8 RGB image and its (H, W) uint8 proposal label map."""
        img_id = self.ids[index]
        if self.cache is not None and img_id in self.cache:
            return self.cache[img_id]
        info = self.proposals.images[img_id]
        img = read_rgb(osp.join(self.img_dir, info['file_name']))
        label = self.proposals.label_map(img_id)
        if img.shape[:2] != label.shape:
            raise ValueError(f'{info["file_name"]}: image {img.shape[:2]} vs proposals {label.shape}')
        if self.cache is not None:
            self.cache[img_id] = (img, label)
        return img, label

    def __getitem__(self, index: int) -> dict:
        img, label = self.load(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        img1, label1, img2, label2 = self.transform(rng, img, label)
        return dict(img1=torch.from_numpy(img1).permute(2, 0, 1).contiguous(),
                    label1=torch.from_numpy(label1.astype(np.int64)),
                    img2=torch.from_numpy(img2).permute(2, 0, 1).contiguous(),
                    label2=torch.from_numpy(label2.astype(np.int64)))


def collate_two_views(items: Sequence[dict]) -> dict:
    """Stack items of :class:`MaskProposalDataset`: images (B, 3, S, S), labels (B, S, S)."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@DATASETS.register_module()
class SemanticSegDataset(Dataset):
    """Semantic ground truth from a COCO instance json: class 0 is background, classes 1..C follow.

    Args:
        img_dir (str): Image folder.
        ann_file (str): COCO json with instance masks.
        class_key (str): ``'kind'`` (the demo: names in the top-level ``kinds`` list and per
            annotation) or ``'category_id'`` (ordinary COCO categories).
        background (str): Name of class 0.
        scale (int, optional): Resize the image (not the labels) so its longer side is this.
        max_images (int, optional): Use only the first images (by id), e.g. a probe subset.

    Item: ``dict(img=(3, h, w) float, label=(H, W) long, file_name=str)``; labels stay at the
    original resolution.
    """

    def __init__(self, img_dir: str, ann_file: str, class_key: str = 'kind', background: str = 'background',
                 scale: Optional[int] = None, max_images: Optional[int] = None) -> None:
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'image folder not found: {img_dir!r}')
        data = load_coco_json(ann_file, 'ground-truth file')
        self.img_dir, self.class_key, self.scale = img_dir, class_key, scale
        if class_key == 'kind':
            if 'kinds' not in data:
                raise ValueError(f'{ann_file} has no top-level `kinds` list; use class_key="category_id"')
            names = list(data['kinds'])
            self.class_index = {name: i + 1 for i, name in enumerate(names)}
        elif class_key == 'category_id':
            cats = sorted(data['categories'], key=lambda c: c['id'])
            names = [c['name'] for c in cats]
            self.class_index = {c['id']: i + 1 for i, c in enumerate(cats)}
        else:
            raise ValueError(f'class_key must be "kind" or "category_id", got {class_key!r}')
        self.classes: List[str] = [background] + names
        self.images = sorted(data['images'], key=lambda i: i['id'])[:max_images]
        self.anns: Dict[int, List[dict]] = {img['id']: [] for img in self.images}
        for ann in data['annotations']:
            if ann['image_id'] not in self.anns:
                continue
            if class_key not in ann:
                raise ValueError(f'{ann_file}: annotation {ann.get("id")} has no {class_key!r}')
            self.anns[ann['image_id']].append(ann)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def label_map(self, index: int) -> np.ndarray:
        """(H, W) uint8 semantic label map of image ``index`` (later annotations paint over)."""
        info = self.images[index]
        label = np.zeros((info['height'], info['width']), np.uint8)
        for ann in self.anns[info['id']]:
            if ann.get('iscrowd', 0):
                continue
            label[decode_segmentation(ann['segmentation'], info['height'], info['width'])] = \
                self.class_index[ann[self.class_key]]
        return label

    def __getitem__(self, index: int) -> dict:
        info = self.images[index]
        img = read_rgb(osp.join(self.img_dir, info['file_name']))
        if self.scale:
            factor = self.scale / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        return dict(img=torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).contiguous(),
                    label=torch.from_numpy(self.label_map(index).astype(np.int64)),
                    file_name=info['file_name'])
