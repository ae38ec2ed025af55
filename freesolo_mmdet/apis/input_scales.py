"""Input scales chosen from the images of a run: the pipeline's resolution-aware default.

A config's resize transforms state the scales it was designed for (the demo configs: short sides of
256-320 px for training, 544 px for Free Mask, for 320 px images). Images with more pixels than that
would lose detail the method needs (objects a few percent of the image side span less than a feature
cell at stride 32). So the pipeline raises every resize of both configs by one factor: the images'
median short side over the training config's test short side, never below 1 (a config is never shrunk)
and at most ``max_factor`` (memory and time grow with its square).
"""
import copy
from statistics import median
from typing import Iterator, List, Optional, Sequence

from mmengine.config import Config
from PIL import Image

__all__ = ['median_short_side', 'resize_short_side', 'train_short_side', 'scale_pipeline', 'input_scale_factor',
           'scale_configs']

#: transforms whose sizes scale: ``scale`` (one (long, short) pair or a list of them) or ``scales``
RESIZE_TYPES = ('Resize', 'RandomResize', 'RandomChoiceResize', 'FixScaleResize')


def median_short_side(images: Sequence[dict], max_samples: int = 256) -> Optional[int]:
    """Median of min(height, width) over at most ``max_samples`` images spread evenly over the list
    (Pillow reads the headers only); None when none can be read."""
    step = max(1, len(images) // max_samples)
    sides = []
    for image in list(images)[::step][:max_samples]:
        try:
            with Image.open(image['path']) as img:
                sides.append(min(img.size))
        except (OSError, ValueError):
            continue
    return int(median(sides)) if sides else None


def _resizes(pipeline: Sequence[dict]) -> Iterator[dict]:
    for transform in pipeline:
        if transform.get('type') in RESIZE_TYPES:
            yield transform
        for key in ('transforms', 'branch_pipelines'):  # RandomApply / RandomChoice / MultiBranch wrappers
            inner = transform.get(key)
            if isinstance(inner, dict):
                inner = [t for branch in inner.values() for t in branch]
            if isinstance(inner, (list, tuple)):
                flat = [t for item in inner for t in (item if isinstance(item, (list, tuple)) else [item])]
                yield from _resizes([t for t in flat if isinstance(t, dict)])


def _pairs(transform: dict) -> List[tuple]:
    value = transform.get('scales', transform.get('scale'))
    if value is None or isinstance(value, (int, float)):
        return [] if value is None else [(value, value)]
    return [tuple(value)] if isinstance(value[0], (int, float)) else [tuple(v) for v in value]


def resize_short_side(pipeline: Sequence[dict]) -> Optional[int]:
    """The largest short side that the pipeline's resize transforms produce (None without one): for
    ``scale=(long, short)`` with ``keep_ratio``, ``min(long, short)``."""
    sides = [min(pair) for transform in _resizes(pipeline) for pair in _pairs(transform)]
    return max(sides) if sides else None


def scale_pipeline(pipeline: Sequence[dict], factor: float) -> list:
    """A copy of ``pipeline`` whose resize sizes (``scale``/``scales``) are multiplied by ``factor``
    and rounded; ``scale_factor`` resizes are left alone."""
    pipeline = copy.deepcopy(list(pipeline))
    for transform in _resizes(pipeline):
        key = 'scales' if 'scales' in transform else 'scale'
        value = transform.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            transform[key] = round(value * factor)
        elif isinstance(value[0], (int, float)):
            transform[key] = tuple(round(v * factor) for v in value)
        else:
            transform[key] = [tuple(round(v * factor) for v in pair) for pair in value]
    return pipeline


def input_scale_factor(image_short_side: Optional[int], config_short_side: Optional[int],
                       max_factor: float = 2.0) -> float:
    """``image_short_side / config_short_side`` clipped to [1, max_factor]; 1 when either is unknown."""
    if not image_short_side or not config_short_side:
        return 1.0
    return min(max_factor, max(1.0, image_short_side / config_short_side))


def _datasets(dataset: dict) -> Iterator[dict]:
    """Every dataset config with a ``pipeline`` under ``dataset``, through wrappers."""
    if not isinstance(dataset, dict):
        return
    if 'pipeline' in dataset:
        yield dataset
    yield from _datasets(dataset.get('dataset'))
    for child in dataset.get('datasets') or []:
        yield from _datasets(child)


def train_short_side(cfg: Config) -> Optional[int]:
    """The largest resize short side of the training datasets' pipelines (None without one)."""
    sides = [resize_short_side(dataset['pipeline']) for dataset in _datasets(cfg.train_dataloader.dataset)]
    return max([side for side in sides if side], default=None)


def scale_configs(configs: Sequence[Config], factor: float) -> List[Config]:
    """Copies of the configs with every resize scaled by ``factor``: ``test_pipeline``,
    ``train_pipeline`` and the pipelines of the train/val/test dataloaders' datasets."""
    scaled = []
    for cfg in configs:
        cfg = copy.deepcopy(cfg)
        for key in ('test_pipeline', 'train_pipeline'):
            if cfg.get(key):
                cfg[key] = scale_pipeline(cfg[key], factor)
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            for dataset in _datasets((cfg.get(key) or {}).get('dataset')):
                dataset['pipeline'] = scale_pipeline(dataset['pipeline'], factor)
        scaled.append(cfg)
    return scaled
