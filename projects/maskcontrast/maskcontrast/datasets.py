"""Datasets: two-view training on mask proposals, and semantic ground truth for evaluation.

Images are float32 RGB tensors in [0, 255] of shape (3, H, W); the model normalises. Items follow
mmengine's ``dict(inputs=..., data_samples=...)`` convention.
"""
import bisect
import os.path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmdet.registry import DATASETS
from mmdet.structures import DetDataSample
from mmengine.logging import print_log
from mmengine.structures import PixelData
from torch.utils.data import Dataset

from .proposal_check import summarize_bad_entries
from .proposals import MaskProposals, decode_segmentation, load_coco_json
from .transforms import TwoViewTransform

__all__ = ['read_rgb', 'MaskProposalDataset', 'SemanticSegDataset', 'SplitConcatDataset']


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

    The whole proposal file is checked when the dataset is built (see :class:`MaskProposals`): bad
    entries are logged with their reason and skipped, and their count is stated, so that none
    surfaces midway through training. They stay in :attr:`bad_entries`.

    Augmentations draw from numpy's global generator (one seed per item), which mmengine seeds per
    rank (``randomness``) and per data loader worker; mmengine's resume replays the skipped batches,
    so a resumed run sees the same views as an uninterrupted one.

    Args:
        img_dir (str): Folder of the images (``file_name`` of the json is relative to it).
        proposal_file (str): COCO json of class-agnostic masks (Free Masks or pseudo labels).
        image_file (str, optional): Image list when ``proposal_file`` is results-style.
        transform (dict): Arguments of :class:`TwoViewTransform`.
        min_score, min_area, max_per_image: Proposal filters, see :class:`MaskProposals`.
        cache (bool): Keep decoded images and label maps in memory (per data loader worker).
        check_image_size (bool): Compare every image file's size (header only) with its entry.

    Item: ``dict(inputs=(2, 3, S, S) float, data_samples=dict(proposals=(2, S, S) long))``, view 1
    then view 2; labels 0 = no proposal and ``k`` = proposal ``k`` (the same ``k`` in both views).
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
                 check_image_size: bool = True) -> None:
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'image folder not found: {img_dir!r}')
        self.img_dir = img_dir
        self.proposals = MaskProposals(proposal_file, image_file, min_score, min_area, max_per_image, img_dir=img_dir,
                                       check_image_size=check_image_size)
        self.bad_entries: List[dict] = self.proposals.bad_entries
        self.ids = self.proposals.image_ids(with_masks_only=True)
        checked = self.proposals.num_checked
        print_log(f'{proposal_file}: checked {checked["images"]} images and {checked["annotations"]} masks; '
                  f'{len(self.bad_entries)} bad entries skipped; {len(self.ids)} images with proposals used',
                  logger='current')
        if self.bad_entries:
            print_log(summarize_bad_entries(self.bad_entries, proposal_file), logger='current', level=30)
        self.transform = TwoViewTransform(**(transform or {}))
        self.cache: Optional[Dict[int, tuple]] = {} if cache else None

    @property
    def metainfo(self) -> dict:
        """What mmengine stores as ``dataset_meta`` in checkpoints."""
        return dict(proposal_file=self.proposals.proposal_file, num_images=len(self.ids))

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
        rng = np.random.default_rng(np.random.randint(2**31))
        img1, label1, img2, label2 = self.transform(rng, img, label)
        views = torch.stack([torch.from_numpy(v).permute(2, 0, 1) for v in (img1, img2)]).contiguous()
        labels = torch.stack([torch.from_numpy(v.astype(np.int64)) for v in (label1, label2)])
        return dict(inputs=views, data_samples=dict(proposals=labels))


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
        split (str): Tag of the items (``'val'``, ``'probe_train'``): the metrics pick their split.

    Item: ``dict(inputs=(3, h, w) float, data_samples=DetDataSample)`` with ``gt_sem_seg.sem_seg``
    (1, H, W) long labels at the original resolution and metainfo ``img_path``, ``ori_shape``,
    ``img_shape``, ``sample_idx`` and ``split``.
    """

    def __init__(self,
                 img_dir: str,
                 ann_file: str,
                 class_key: str = 'kind',
                 background: str = 'background',
                 scale: Optional[int] = None,
                 max_images: Optional[int] = None,
                 split: str = 'val') -> None:
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'image folder not found: {img_dir!r}')
        data = load_coco_json(ann_file, 'ground-truth file')
        self.img_dir, self.class_key, self.scale, self.split = img_dir, class_key, scale, split
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
    def metainfo(self) -> dict:
        """``classes`` (background first); mmengine passes it to the metrics as ``dataset_meta``."""
        return dict(classes=tuple(self.classes))

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
        path = osp.join(self.img_dir, info['file_name'])
        img = read_rgb(path)
        ori_shape = img.shape[:2]
        if self.scale:
            factor = self.scale / max(img.shape[:2])
            size = (max(1, round(img.shape[1] * factor)), max(1, round(img.shape[0] * factor)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        label = torch.from_numpy(self.label_map(index).astype(np.int64))
        sample = DetDataSample(metainfo=dict(img_path=path, ori_shape=ori_shape, img_shape=img.shape[:2],
                                             sample_idx=index, split=self.split))
        sample.gt_sem_seg = PixelData(sem_seg=label[None])
        return dict(inputs=torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).contiguous(),
                    data_samples=sample)


@DATASETS.register_module()
class SplitConcatDataset(Dataset):
    """Several :class:`SemanticSegDataset` one after the other, e.g. the val images and the linear
    probe's training images, so that one test loop feeds both; the items keep their ``split`` tag
    and their ``sample_idx`` within their own dataset.

    Args:
        datasets (list[dict | Dataset]): The parts; their ``metainfo`` (classes) must agree.
    """

    def __init__(self, datasets: Sequence) -> None:
        self.datasets = [DATASETS.build(d) if isinstance(d, dict) else d for d in datasets]
        if not self.datasets:
            raise ValueError('SplitConcatDataset needs at least one dataset')
        for d in self.datasets[1:]:
            if d.metainfo != self.datasets[0].metainfo:
                raise ValueError(f'the parts disagree on their classes: {self.datasets[0].metainfo} vs {d.metainfo}')
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets]).tolist()

    @property
    def metainfo(self) -> dict:
        return self.datasets[0].metainfo

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} items')
        part = bisect.bisect_right(self.offsets, index) - 1
        return self.datasets[part][index - self.offsets[part]]
