"""Linear-probe mIoU as an mmengine metric: a linear classifier on frozen pixel features."""
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import METRICS
from mmengine.logging import print_log

from .pixel_sampler import PixelSampleMetric
from .metrics import confusion_matrix, iou_from_confusion

__all__ = ['LinearProbeMIoU', 'train_linear_probe']


def train_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, iters: int = 300,
                       lr: float = 0.01, seed: int = 0, ignore_index: int = 255) -> torch.nn.Linear:
    """A linear classifier (N, C) features -> (N, num_classes) logits, trained with cross-entropy on all
    of (feats, labels) in every step (full batch), Adam with cosine decay to 0. Its initialisation draws from
    ``seed`` without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = torch.nn.Linear(feats.shape[1], num_classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iters)
    for _ in range(iters):
        loss = F.cross_entropy(probe(feats), labels, ignore_index=ignore_index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return probe


@METRICS.register_module()
class LinearProbeMIoU(PixelSampleMetric):
    """Linear probe: a linear classifier (a 1x1 conv) trained on the frozen features of the pixels of
    one split (``train_split``, e.g. the ground-truth-labelled training images) and scored, without any
    matching, on another (``test_split``, the val images).

    Both splits come from the same test loop (:class:`SplitConcatDataset`); each keeps a uniform sample
    of ``num_samples`` pixels (features bilinearly upsampled to the labels, not renormalised: a 1x1
    conv on them equals the conv's logits upsampled). The probe trains ``iters`` full-batch Adam steps
    on the training sample and is scored on the test sample.

    Metrics (in %): ``mIoU``, ``aAcc``, ``IoU_per_class``.
    """
    default_prefix = 'probe'

    def __init__(self,
                 num_samples: int = 100000,
                 iters: int = 300,
                 lr: float = 0.01,
                 seed: int = 0,
                 train_split: str = 'probe_train',
                 test_split: str = 'val',
                 sample_seed: int = 0,
                 ignore_index: int = 255,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        self.train_split, self.test_split = train_split, test_split
        self.iters, self.lr, self.seed, self.ignore_index = iters, lr, seed, ignore_index
        super().__init__({train_split: num_samples, test_split: num_samples}, sample_seed, renormalize=False,
                         collect_device=collect_device, prefix=prefix)

    def compute_metrics(self, results: Dict[str, Dict[str, torch.Tensor]]) -> dict:
        classes: List[str] = list((self.dataset_meta or {}).get('classes', []))
        if not classes:
            raise ValueError('LinearProbeMIoU needs dataset_meta["classes"] (the dataset\'s metainfo)')
        train, test = results[self.train_split], results[self.test_split]
        for split, state in ((self.train_split, train), (self.test_split, test)):
            if state['keys'].numel() == 0:
                raise ValueError(f'LinearProbeMIoU: no pixels of split {split!r}; the test dataset must hold it '
                                 '(SplitConcatDataset of the val and the probe-training images)')
        num_classes = len(classes)
        probe = train_linear_probe(train['feats'].float(), train['labels'], num_classes, self.iters, self.lr,
                                   self.seed, self.ignore_index)
        with torch.no_grad():
            pred = probe(test['feats'].float()).argmax(1)
        conf = confusion_matrix(pred, test['labels'], num_classes, num_classes, self.ignore_index)
        ious = 100 * iou_from_confusion(conf)
        miou = float(np.nanmean(ious))
        print_log(f'linear probe trained on {self.describe_sample(train)} of split {self.train_split!r}, scored on '
                  f'{self.describe_sample(test)} of split {self.test_split!r}: mIoU {miou:.1f}; IoU per class: '
                  + ', '.join(f'{name} {iou:.0f}' for name, iou in zip(classes, ious)), logger='current')
        return dict(mIoU=round(miou, 2), aAcc=round(100 * float(np.trace(conf) / max(conf.sum(), 1)), 2),
                    IoU_per_class=[round(float(v), 2) for v in ious])
