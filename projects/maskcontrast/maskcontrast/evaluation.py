"""Unsupervised-segmentation evaluation of dense features: K-means + Hungarian mIoU, linear probe.

Features are extracted once per image at the network's resolution, L2-normalised per pixel and
kept as float16 ``(C, h, w)``; both protocols upsample them (bilinear) to the label resolution.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.utils import ProgressBar

from .kmeans import kmeans, kmeans_assign
from .metrics import confusion_matrix, hungarian_miou, iou_from_confusion

__all__ = [
    'feature_extractor', 'extract_features', 'upsampled_pixels', 'kmeans_miou', 'kmeans_segmentation',
    'linear_probe_miou'
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_extractor(model, source: str, device: Optional[torch.device] = None) -> FeatureFn:
    """A function (1, 3, H, W) image -> (1, C, h, w) CPU features of ``model`` (a :class:`MaskContrast`)
    run on ``device``.

    ``source``: ``'model'`` (the unit pixel embeddings), ``'backbone.<i>'`` (backbone level i) or
    ``'backbone.cat'`` (every backbone level, each L2-normalised, upsampled to the finest and
    concatenated).
    """
    def on_device(fn: FeatureFn) -> FeatureFn:
        return lambda img: fn(img.to(device) if device is not None else img).float().cpu()

    if source == 'model':
        return on_device(lambda img: model.embed(img)[0])
    if source == 'backbone.cat':
        def cat(img):
            levels = model.backbone_features(img)
            size = levels[0].shape[-2:]
            return torch.cat([F.interpolate(F.normalize(f, dim=1), size, mode='bilinear', align_corners=False)
                              for f in levels], dim=1)
        return on_device(cat)
    if source.startswith('backbone.') and source.split('.', 1)[1].isdigit():
        index = int(source.split('.', 1)[1])
        return on_device(lambda img: model.backbone_features(img)[index])
    raise ValueError(f'unknown feature source {source!r}: model, backbone.<i> or backbone.cat')


@torch.no_grad()
def extract_features(fn: FeatureFn, dataset,
                     show_progress: bool = True) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Features and labels of every item of a :class:`SemanticSegDataset`-like dataset.

    Returns:
        tuple: features, list of (C, h, w) float16 unit vectors per pixel; labels, list of
        (H, W) uint8 (or long when classes exceed 255).
    """
    feats, labels = [], []
    bar = ProgressBar(len(dataset)) if show_progress else None
    for i in range(len(dataset)):
        item = dataset[i]
        feat = F.normalize(fn(item['img'][None]).float(), dim=1)[0]
        feats.append(feat.half())
        labels.append(item['label'])
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    return feats, labels


def upsampled_pixels(feat: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (H * W, C) float32 unit vectors at ``size`` (bilinear, renormalised)."""
    up = F.interpolate(feat[None].float(), size, mode='bilinear', align_corners=False)[0]
    return F.normalize(up, dim=0).flatten(1).t()


def kmeans_miou(feats: Sequence[torch.Tensor],
                labels: Sequence[torch.Tensor],
                num_classes: int,
                num_clusters: Optional[int] = None,
                num_samples: int = 100000,
                seeds: Sequence[int] = (0, 1, 2, 3, 4),
                iters: int = 100,
                n_init: int = 3,
                ignore_index: int = 255,
                return_fit: bool = False) -> Dict[str, object]:
    """K-means over pixel embeddings, Hungarian matching to the classes, mIoU.

    For each seed: fit K-means on ``num_samples`` pixels drawn uniformly from all images, assign
    every pixel, accumulate one confusion matrix over the dataset, match clusters to classes
    (Hungarian) and take the mIoU. Background is a class like the others.

    Returns:
        dict: ``miou`` (mean over seeds), ``miou_std``, ``per_seed``, ``ious`` (per class, mean over
        seeds) and ``pixel_acc`` (mean); with ``return_fit`` also ``fit``: the first seed's
        ``centers`` (K, C) and cluster -> class ``mapping`` (K, ), for :func:`kmeans_segmentation`.
    """
    k = num_clusters or num_classes
    sizes = [tuple(lab.shape) for lab in labels]
    total = sum(h * w for h, w in sizes)
    picks = [torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:num_samples].sort().values
             for seed in seeds]
    # each image is upsampled twice in all (sampling, assignment), whatever the number of seeds
    samples, offset = [[] for _ in seeds], 0
    for feat, (h, w) in zip(feats, sizes):
        pixels = upsampled_pixels(feat, (h, w))
        for s, pick in enumerate(picks):
            mine = pick[(pick >= offset) & (pick < offset + h * w)] - offset
            if mine.numel():
                samples[s].append(pixels[mine])
        offset += h * w
    centers = [kmeans(torch.cat(samples[s]), k, iters=iters, n_init=n_init, seed=seed)[0]
               for s, seed in enumerate(seeds)]
    del samples
    confs = [np.zeros((k, num_classes), np.int64) for _ in seeds]
    for feat, lab in zip(feats, labels):
        pixels = upsampled_pixels(feat, tuple(lab.shape))
        for s in range(len(seeds)):
            pred, _ = kmeans_assign(pixels, centers[s])
            confs[s] += confusion_matrix(pred, lab, k, num_classes, ignore_index)
    results = [hungarian_miou(conf) for conf in confs]
    mious = np.array([r['miou'] for r in results])
    summary = dict(miou=float(mious.mean()), miou_std=float(mious.std()), per_seed=mious.tolist(),
                   ious=np.nanmean(np.stack([r['ious'] for r in results]), 0).tolist(),
                   pixel_acc=float(np.mean([r['pixel_acc'] for r in results])))
    if return_fit:
        summary['fit'] = dict(centers=centers[0], mapping=results[0]['mapping'])
    return summary


def kmeans_segmentation(feat: torch.Tensor, size: Tuple[int, int], centers: torch.Tensor,
                        mapping: np.ndarray) -> torch.Tensor:
    """(C, h, w) features -> (H, W) long class map at ``size``: nearest of the (K, C) ``centers``,
    then the Hungarian cluster -> class ``mapping`` (K, ); unmatched clusters give -1."""
    clusters, _ = kmeans_assign(upsampled_pixels(feat, size), centers)
    return torch.as_tensor(mapping, dtype=torch.long)[clusters].view(size)


def linear_probe_miou(train_feats: Sequence[torch.Tensor],
                      train_labels: Sequence[torch.Tensor],
                      val_feats: Sequence[torch.Tensor],
                      val_labels: Sequence[torch.Tensor],
                      num_classes: int,
                      iters: int = 300,
                      batch_size: int = 8,
                      lr: float = 0.01,
                      seed: int = 0,
                      ignore_index: int = 255) -> Dict[str, object]:
    """Train a 1x1 conv on frozen features (train split), report mIoU on the val split.

    The logits are upsampled (bilinear) to the label resolution, so the probe is the 1x1 conv on
    upsampled features; cross-entropy, Adam with cosine decay, no augmentation.

    Returns:
        dict: ``miou``, ``ious`` (per class), ``pixel_acc``.
    """
    torch.manual_seed(seed)
    channels = train_feats[0].shape[0]
    probe = nn.Conv2d(channels, num_classes, 1)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(seed)
    n = len(train_feats)
    for _ in range(iters):
        batch = torch.randint(n, (min(batch_size, n), ), generator=gen).tolist()
        loss = 0.
        for i in batch:
            logits = F.interpolate(probe(train_feats[i][None].float()), tuple(train_labels[i].shape),
                                   mode='bilinear', align_corners=False)
            loss = loss + F.cross_entropy(logits, train_labels[i][None].long(), ignore_index=ignore_index)
        opt.zero_grad()
        (loss / len(batch)).backward()
        opt.step()
        sched.step()
    conf = np.zeros((num_classes, num_classes), np.int64)
    with torch.no_grad():
        for feat, lab in zip(val_feats, val_labels):
            logits = F.interpolate(probe(feat[None].float()), tuple(lab.shape), mode='bilinear', align_corners=False)
            conf += confusion_matrix(logits.argmax(1)[0], lab, num_classes, num_classes, ignore_index)
    ious = iou_from_confusion(conf)
    return dict(miou=float(np.nanmean(ious)), ious=ious.tolist(), pixel_acc=float(np.trace(conf) / max(conf.sum(), 1)))
