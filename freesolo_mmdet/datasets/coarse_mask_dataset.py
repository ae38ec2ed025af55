# Copyright (c) freesolo_mmdet contributors.
"""COCO-style dataset of coarse (pseudo) masks with their ``score``/``emb``."""
import os.path as osp
from typing import List, Union

import numpy as np
from mmengine.fileio import get_local_path

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

__all__ = ['CoarseMaskCocoDataset']


@DATASETS.register_module()
class CoarseMaskCocoDataset(CocoDataset):
    """One-class (``object``) COCO dataset of Free Mask / pseudo-label files.

    Each instance dict gets, besides CocoDataset's keys, ``score`` (float,
    the annotation's ``score``, 1.0 when absent) and ``emb`` (float32 array
    (emb_dim, ), the annotation's ``emb``, zeros when absent: the head skips
    all-zero embeddings). Each data info also gets ``emb_dim``.

    Args:
        emb_dim (int): Length of the ``emb`` vectors. Defaults to 128.
        **kwargs: Arguments of :class:`CocoDataset`.
    """

    METAINFO = dict(classes=('object', ), palette=[(220, 20, 60)])

    def __init__(self, *args, emb_dim: int = 128, **kwargs) -> None:
        self.emb_dim = emb_dim
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Load the annotation file, failing clearly on a missing, empty or
        non-COCO file, a file without images, or without an ``object``
        category."""
        with get_local_path(
                self.ann_file, backend_args=self.backend_args) as local_path:
            if not osp.isfile(local_path):
                raise FileNotFoundError(
                    f'annotation file not found: {self.ann_file}')
            if osp.getsize(local_path) == 0:
                raise ValueError(f'annotation file is empty: {self.ann_file}')
        try:
            data_list = super().load_data_list()
        except KeyError as error:
            raise ValueError(f'{self.ann_file} is not a COCO annotation '
                             f'file: missing {error}') from error
        if not data_list:
            raise ValueError(f'annotation file has no images: {self.ann_file}')
        if not self.cat_ids:
            raise ValueError(
                f'annotation file {self.ann_file} has no category named '
                f'{self.metainfo["classes"]}')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        """CocoDataset's parsing, plus ``score`` and ``emb`` per instance.

        CocoDataset skips invalid annotations; parsing them one at a time
        keeps each instance paired with its annotation.
        """
        data_info = super().parse_data_info({**raw_data_info,
                                             'raw_ann_info': []})
        data_info['emb_dim'] = self.emb_dim
        for ann in raw_data_info['raw_ann_info']:
            instances = super().parse_data_info({
                **raw_data_info, 'raw_ann_info': [ann]
            })['instances']
            for instance in instances:
                instance['score'] = float(ann.get('score', 1.0))
                instance['emb'] = self._parse_emb(ann)
            data_info['instances'] += instances
        return data_info

    def _parse_emb(self, ann: dict) -> np.ndarray:
        """(emb_dim, ) float32 embedding of an annotation, zeros if absent."""
        if ann.get('emb') is None:
            return np.zeros(self.emb_dim, dtype=np.float32)
        emb = np.asarray(ann['emb'], dtype=np.float32)
        if emb.shape != (self.emb_dim, ) or not np.isfinite(emb).all():
            raise ValueError(
                f'annotation {ann.get("id")} in {self.ann_file}: `emb` must '
                f'be {self.emb_dim} finite numbers, got shape {emb.shape}')
        return emb

    def filter_data(self) -> List[dict]:
        """CocoDataset's filtering (``filter_cfg``), failing clearly when no
        image is left for training."""
        valid_data_infos = super().filter_data()
        if self.data_list and not valid_data_infos:
            raise ValueError(
                f'all {len(self.data_list)} images of {self.ann_file} were '
                f'filtered out by filter_cfg={self.filter_cfg}: no image has '
                'a usable mask.')
        return valid_data_infos
