"""Pictures of the K-means segmentation of the first val images, drawn by the visualiser after the metric."""
import os.path as osp
from typing import List, Optional, Sequence

import cv2
import mmcv
import numpy as np
import torch
from mmdet.registry import HOOKS
from mmdet.structures import DetDataSample
from mmengine.hooks import Hook
from mmengine.structures import PixelData
from mmengine.utils import mkdir_or_exist

from .kmeans import kmeans_assign
from .kmeans_metric import KMeansMIoU
from .pixel_sampler import sample_bilinear
from .visualization import SemSegLocalVisualizer

__all__ = ['KMeansVisualizationHook', 'kmeans_segmentation']


def kmeans_segmentation(feat: torch.Tensor, size, centers: torch.Tensor, mapping: np.ndarray) -> torch.Tensor:
    """(C, h, w) features -> (H, W) long class map at ``size``: features upsampled (bilinear, renormalised),
    nearest of the (K, C) ``centers``, then the Hungarian cluster -> class ``mapping`` (K, ); unmatched
    clusters give -1."""
    height, width = size
    pixels = torch.nn.functional.normalize(sample_bilinear(feat, torch.arange(height * width), size), dim=1)
    clusters, _ = kmeans_assign(pixels, centers.float())
    return torch.as_tensor(mapping, dtype=torch.long)[clusters].view(height, width)


@HOOKS.register_module()
class KMeansVisualizationHook(Hook):
    """Draw the K-means segmentation (clusters coloured by their Hungarian-matched class) of the first
    ``show_num`` images of ``split``, next to the image and its ground truth.

    The K-means is fitted by :class:`KMeansMIoU` at the end of the loop, so the hook keeps the features
    of the images it will draw (at the network's resolution: small) during the loop and draws after
    the metric, with the runner's visualiser (:class:`SemSegLocalVisualizer`). Use it as
    ``default_hooks.visualization``: ``tools/test.py --show-dir DIR`` sets ``draw=True`` and
    ``test_out_dir``, as for mmdet's ``DetVisualizationHook``; the pictures then go to
    ``work_dir/TIMESTAMP/DIR/<image>.png`` plus ``overview.jpg`` (all of them stacked). After a
    validation they go to the visualiser's backends (``vis_data/vis_image``). In DDP, rank 0 draws the
    images it processed.

    Args:
        draw (bool): Draw at all.
        show_num (int): Images drawn.
        split (str): Items drawn (and the :class:`KMeansMIoU` whose fit is used).
        test_out_dir (str, optional): Sub-folder of the test run's log folder for the pictures.
    """

    def __init__(self, draw: bool = False, show_num: int = 4, split: str = 'val',
                 test_out_dir: Optional[str] = None) -> None:
        self.draw, self.show_num, self.split, self.test_out_dir = draw, show_num, split, test_out_dir
        self._kept: List[DetDataSample] = []

    def _keep(self, outputs: Sequence[DetDataSample]) -> None:
        if not self.draw:
            return
        for sample in outputs:
            if len(self._kept) < self.show_num and sample.metainfo.get('split', 'val') == self.split:
                kept = DetDataSample(metainfo=sample.metainfo)
                kept.gt_sem_seg = PixelData(sem_seg=sample.gt_sem_seg.sem_seg.cpu())
                kept.pred_feats = PixelData(data=sample.pred_feats.data.cpu())
                self._kept.append(kept)

    def before_val_epoch(self, runner) -> None:
        self._kept = []

    def before_test_epoch(self, runner) -> None:
        self._kept = []

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._keep(outputs)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._keep(outputs)

    def _fit(self, evaluator) -> Optional[dict]:
        for metric in evaluator.metrics:
            if isinstance(metric, KMeansMIoU) and metric.split == self.split and metric.last_fit is not None:
                return metric.last_fit
        return None

    def _render(self, runner, evaluator, out_dir: Optional[str], step: int = 0) -> List[np.ndarray]:
        fit = self._fit(evaluator)
        if not self._kept or fit is None or runner.rank != 0:
            self._kept = []
            return []
        visualizer = runner.visualizer
        if not isinstance(visualizer, SemSegLocalVisualizer):
            raise TypeError(f'KMeansVisualizationHook draws with SemSegLocalVisualizer; the runner has '
                            f'{type(visualizer).__name__} (set visualizer.type in the config)')
        visualizer.dataset_meta = dict(classes=tuple(fit['classes']))
        source = getattr(getattr(runner.model, 'module', runner.model), 'test_cfg', {}).get('feature_source', '')
        pictures = []
        for sample in self._kept:
            label = sample.gt_sem_seg.sem_seg[0]
            seg = kmeans_segmentation(sample.pred_feats.data, tuple(label.shape), fit['centers'], fit['mapping'])
            sample.pred_sem_seg = PixelData(sem_seg=seg[None])
            image = mmcv.imread(sample.img_path, channel_order='rgb')
            name = osp.basename(sample.img_path)
            out_file = osp.join(out_dir, osp.splitext(name)[0] + '.png') if out_dir else None
            pictures.append(visualizer.add_datasample(name, image, sample, out_file=out_file,
                                                      pred_title=f'{source} K-means', step=step))
        self._kept = []
        return pictures

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._render(runner, runner.val_evaluator, None, step=runner.iter)

    def after_test_epoch(self, runner, metrics=None) -> None:
        out_dir = None
        if self.test_out_dir is not None:
            out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
            mkdir_or_exist(out_dir)
        pictures = self._render(runner, runner.test_evaluator, out_dir)
        if pictures and out_dir is not None:
            width = max(p.shape[1] for p in pictures)
            overview = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255)
                                       for p in pictures])
            mmcv.imwrite(overview[..., ::-1], osp.join(out_dir, 'overview.jpg'), params=[cv2.IMWRITE_JPEG_QUALITY, 85])
            runner.logger.info(f'wrote {len(pictures)} K-means pictures and overview.jpg to {out_dir}')
