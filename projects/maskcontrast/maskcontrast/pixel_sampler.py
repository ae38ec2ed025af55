"""A bounded, uniform sample of the pixels of a stream of images, and the base of the metrics that keep one.

Every pixel of every image gets a random key, drawn from ``(seed, image id)``; the sample is the
``capacity`` pixels with the smallest keys seen so far, i.e. a uniform sample without replacement
of all pixels streamed (reservoir sampling with random keys). Memory is ``capacity`` pixels whatever
the number of images. Samples of several processes merge exactly (the smallest keys of the union),
and an image seen twice (DDP pads its last batch with repeats) contributes its pixels once.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.dist import all_gather_object, broadcast_object_list, is_main_process
from mmengine.evaluator import BaseMetric

__all__ = ['PixelReservoir', 'sample_bilinear', 'PixelSampleMetric']


def sample_bilinear(feat: torch.Tensor, index: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Features at some pixels of ``feat`` bilinearly upsampled to ``size``, without the full upsampling.

    Equal to ``F.interpolate(feat[None], size, mode='bilinear', align_corners=False)[0].flatten(1)[:, index]``
    (pixel centres are mapped the same way; border clamping included).

    Args:
        feat (Tensor): (C, h, w) features.
        index (Tensor): (N, ) flat pixel indices into ``size``.
        size (tuple): (H, W) of the target resolution.

    Returns:
        Tensor: (N, C) float32 features.
    """
    height, width = size
    rows = torch.div(index, width, rounding_mode='floor')
    cols = index - rows * width
    # normalised coordinates of the target pixel centres (align_corners=False)
    grid = torch.stack([(2 * cols.float() + 1) / width - 1, (2 * rows.float() + 1) / height - 1], dim=-1)
    out = F.grid_sample(feat[None].float(), grid.view(1, 1, -1, 2).to(feat.device), mode='bilinear',
                        padding_mode='border', align_corners=False)
    return out[0, :, 0].t()


class PixelReservoir:
    """Uniform sample of at most ``capacity`` pixels (features and labels) of all images added.

    Args:
        capacity (int): Pixels kept.
        seed (int): Seed of the keys (``(seed, image id)`` decides an image's keys).
        renormalize (bool): L2-normalise each sampled feature after the upsampling (the K-means
            protocol); False keeps the bilinear mix of unit vectors (the linear probe's, whose 1x1 conv
            on the features commutes with the upsampling of its logits).
    """

    def __init__(self, capacity: int, seed: int = 0, renormalize: bool = True) -> None:
        if capacity <= 0:
            raise ValueError(f'capacity must be positive, got {capacity}')
        self.capacity, self.seed, self.renormalize = capacity, seed, renormalize
        self.keys = torch.empty(0)
        self.codes = torch.empty(0, dtype=torch.long)  # image id << 32 | pixel index
        self.feats: Optional[torch.Tensor] = None
        self.labels = torch.empty(0, dtype=torch.long)
        self.images_seen = 0
        self.pixels_seen = 0

    def __len__(self) -> int:
        return int(self.keys.numel())

    def _image_keys(self, image_id: int, num_pixels: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + int(image_id)) % (2**63))
        return torch.rand(num_pixels, generator=generator)

    def threshold(self) -> float:
        """Pixels with larger keys cannot enter any more (inf until the sample is full)."""
        return float(self.keys.max()) if len(self) >= self.capacity else float('inf')

    def add(self, image_id: int, feat: torch.Tensor, label: torch.Tensor) -> int:
        """Offer every pixel of one image.

        Args:
            image_id (int): Identity of the image (its keys depend on it; 0 <= id < 2**31).
            feat (Tensor): (C, h, w) features at the network's resolution.
            label (Tensor): (H, W) long labels; features are upsampled (bilinearly) to this size.

        Returns:
            int: pixels of this image taken into the sample (at most ``capacity``).
        """
        height, width = label.shape[-2:]
        keys = self._image_keys(image_id, height * width)
        candidates = torch.nonzero(keys < self.threshold())[:, 0]
        if candidates.numel() > self.capacity:
            candidates = candidates[keys[candidates].topk(self.capacity, largest=False).indices]
        if candidates.numel() == 0:
            self.images_seen += 1
            self.pixels_seen += height * width
            return 0
        feats = sample_bilinear(feat.detach().cpu(), candidates, (height, width))
        if self.renormalize:
            feats = F.normalize(feats, dim=1)
        part = dict(keys=keys[candidates], codes=(int(image_id) << 32) + candidates,
                    feats=feats, labels=label.reshape(-1)[candidates].long().cpu())
        self._set(self.merge([self.state(), part], self.capacity))
        self.images_seen += 1
        self.pixels_seen += height * width
        return int(candidates.numel())

    def state(self) -> Dict[str, torch.Tensor]:
        """The sample as a dict of tensors (``keys``, ``codes``, ``feats`` (N, C), ``labels``)."""
        feats = self.feats if self.feats is not None else torch.empty(0, 0)
        return dict(keys=self.keys, codes=self.codes, feats=feats, labels=self.labels)

    def _set(self, state: Dict[str, torch.Tensor]) -> None:
        self.keys, self.codes, self.feats, self.labels = state['keys'], state['codes'], state['feats'], state['labels']

    @staticmethod
    def merge(states: Sequence[Dict[str, torch.Tensor]], capacity: int) -> Dict[str, torch.Tensor]:
        """The ``capacity`` smallest-key pixels of several samples (of one seed), each pixel once.

        Returns:
            dict: a state, sorted by key.
        """
        states = [s for s in states if s['keys'].numel()]
        if not states:
            return dict(keys=torch.empty(0), codes=torch.empty(0, dtype=torch.long), feats=torch.empty(0, 0),
                        labels=torch.empty(0, dtype=torch.long))
        merged = {name: torch.cat([s[name] for s in states]) for name in ('keys', 'codes', 'feats', 'labels')}
        codes, inverse = torch.unique(merged['codes'], return_inverse=True)
        if codes.numel() < merged['codes'].numel():  # repeats: keep one row per pixel
            first = torch.full((codes.numel(), ), merged['codes'].numel(), dtype=torch.long)
            first.scatter_reduce_(0, inverse, torch.arange(inverse.numel()), reduce='amin')
            merged = {name: value[first] for name, value in merged.items()}
        order = merged['keys'].argsort()[:capacity]
        return {name: value[order] for name, value in merged.items()}

    def load_merged(self, states: List[Dict[str, torch.Tensor]]) -> None:
        """Replace the sample by the merge of ``states`` (e.g. gathered from every rank)."""
        self._set(self.merge(states, self.capacity))


class PixelSampleMetric(BaseMetric):
    """Base of the metrics that keep a :class:`PixelReservoir` per split instead of per-image results.

    ``process`` offers the pixels of every predicted image of a tracked split to that split's sample
    (features ``pred_feats.data`` upsampled to the labels ``gt_sem_seg.sem_seg``); ``evaluate`` merges
    the samples of all ranks on rank 0, calls :meth:`compute_metrics` with them and broadcasts the
    result. Memory is bounded by the capacities, whatever the size of the dataset.

    Args:
        splits (dict): split name -> capacity (pixels kept of that split).
        sample_seed (int): Seed of the pixel sample.
        renormalize (bool): See :class:`PixelReservoir`.
    """

    def __init__(self, splits: Dict[str, int], sample_seed: int = 0, renormalize: bool = True,
                 collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.capacities, self.sample_seed, self.renormalize = dict(splits), sample_seed, renormalize
        self.reset()

    def reset(self) -> None:
        """Empty samples (after every evaluation)."""
        self.results = []
        self.samples = {split: PixelReservoir(capacity, self.sample_seed, self.renormalize)
                        for split, capacity in self.capacities.items()}

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            reservoir = self.samples.get(sample.get('split', 'val'))
            if reservoir is not None:
                reservoir.add(sample['sample_idx'], sample['pred_feats']['data'], sample['gt_sem_seg']['sem_seg'][0])

    def evaluate(self, size: int) -> dict:
        states = {split: r.state() for split, r in self.samples.items()}
        gathered = all_gather_object(states)  # [states] outside a process group
        metrics = [None]
        if is_main_process():
            merged = {}
            for split, reservoir in self.samples.items():
                reservoir.load_merged([g[split] for g in gathered])
                merged[split] = reservoir.state()
            result = self.compute_metrics(merged)
            metrics = [{f'{self.prefix}/{k}' if self.prefix else k: v for k, v in result.items()}]
        broadcast_object_list(metrics)
        self.reset()
        return metrics[0]

    @staticmethod
    def describe_sample(state: Dict[str, torch.Tensor]) -> str:
        """``N pixels of M images (min-max per image)``."""
        image_ids = state['codes'] >> 32
        if image_ids.numel() == 0:
            return 'no pixels'
        _, per_image = torch.unique(image_ids, return_counts=True)
        return (f'{image_ids.numel()} pixels of {per_image.numel()} images '
                f'({int(per_image.min())}-{int(per_image.max())} per image)')
