"""K-means mIoU with Hungarian matching as an mmengine metric, on a bounded sample of pixels."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmdet.registry import METRICS
from mmengine.logging import print_log

from .kmeans import kmeans, kmeans_assign
from .metrics import confusion_matrix, hungarian_miou
from .pixel_sampler import PixelSampleMetric

__all__ = ['KMeansMIoU']


@METRICS.register_module()
class KMeansMIoU(PixelSampleMetric):
    """K-means over pixel features, clusters matched to the classes by the Hungarian method, mIoU.

    The pixels are a uniform sample of ``num_samples`` pixels of all images of ``split`` (features
    bilinearly upsampled to the label resolution and renormalised). For each seed: K-means
    (k-means++, ``n_init`` restarts) on the sample, every sampled pixel assigned, one confusion
    matrix, Hungarian matching (maximising matched pixels), mIoU over the classes; background is a
    class like the others. The K-means of the first seed and its cluster -> class map stay in
    :attr:`last_fit` (for :class:`KMeansVisualizationHook`).

    Args:
        num_samples (int): Pixels sampled (fitted and scored); memory stays at this many pixels.
        seeds (sequence[int]): K-means seeds; mean and std over them are reported.
        iters (int): Lloyd iterations per restart.
        n_init (int): Restarts per seed.
        num_clusters (int, optional): K; default the number of classes.
        split (str): The items evaluated (``split`` of :class:`SemanticSegDataset`).
        sample_seed (int): Seed of the pixel sample.
        ignore_index (int): Label left out of the confusion matrix.

    Metrics (in %): ``mIoU`` (mean over seeds), ``mIoU_std``, ``aAcc`` (matched pixel accuracy),
    ``mIoU_per_seed`` and ``IoU_per_class`` (lists, classes in ``dataset_meta['classes']`` order).
    """
    default_prefix = 'kmeans'

    def __init__(self,
                 num_samples: int = 100000,
                 seeds: Sequence[int] = (0, 1, 2, 3, 4),
                 iters: int = 100,
                 n_init: int = 3,
                 num_clusters: Optional[int] = None,
                 split: str = 'val',
                 sample_seed: int = 0,
                 ignore_index: int = 255,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        self.split, self.seeds, self.iters, self.n_init = split, tuple(seeds), iters, n_init
        self.num_clusters, self.ignore_index = num_clusters, ignore_index
        self.last_fit: Optional[dict] = None
        super().__init__({split: num_samples}, sample_seed, renormalize=True, collect_device=collect_device,
                         prefix=prefix)

    def compute_metrics(self, results: Dict[str, Dict[str, torch.Tensor]]) -> dict:
        state = results[self.split]
        classes: List[str] = list((self.dataset_meta or {}).get('classes', []))
        if not classes:
            raise ValueError('KMeansMIoU needs dataset_meta["classes"] (the dataset\'s metainfo)')
        num_classes = len(classes)
        k = self.num_clusters or num_classes
        feats, labels = state['feats'].float(), state['labels']
        if feats.shape[0] < k:
            raise ValueError(f'KMeansMIoU: {feats.shape[0]} sampled pixels of split {self.split!r}, fewer than K={k}')
        results_per_seed, fits = [], []
        for seed in self.seeds:
            centers = kmeans(feats, k, iters=self.iters, n_init=self.n_init, seed=seed)[0]
            pred, _ = kmeans_assign(feats, centers)
            res = hungarian_miou(confusion_matrix(pred, labels, k, num_classes, self.ignore_index))
            results_per_seed.append(res)
            fits.append(dict(centers=centers, mapping=res['mapping']))
        self.last_fit = dict(fits[0], classes=classes)
        mious = 100 * np.array([r['miou'] for r in results_per_seed])
        ious = 100 * np.nanmean(np.stack([r['ious'] for r in results_per_seed]), 0)
        print_log(f'K-means mIoU on {self.describe_sample(state)} of split {self.split!r}, K={k}: '
                  f'{mious.mean():.1f} +- {mious.std():.1f} (seeds {list(self.seeds)}: '
                  f'{" / ".join(f"{m:.1f}" for m in mious)}); IoU per class: '
                  + ', '.join(f'{name} {iou:.0f}' for name, iou in zip(classes, ious)), logger='current')
        return dict(mIoU=round(float(mious.mean()), 2), mIoU_std=round(float(mious.std()), 2),
                    aAcc=round(100 * float(np.mean([r['pixel_acc'] for r in results_per_seed])), 2),
                    mIoU_per_seed=[round(float(m), 2) for m in mious],
                    IoU_per_class=[round(float(v), 2) for v in ious])
