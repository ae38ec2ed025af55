"""Offline demo dataset: composite scenes with exact instance masks.

Real object cut-outs (extracted at run time from the photos that scikit-image
ships, see ``DEMO_DATA_SOURCES.md``) are pasted onto real textures with random
scale, rotation, flips and colour. A mask is the pasted footprint minus every
footprint pasted above it, so the ground truth is exact by construction. JPEG
only perturbs the colours of the written images, never the masks.

Layout written by :func:`make_demo_dataset` (COCO, one class-agnostic
category)::

    out_dir/train/000000.jpg ...        out_dir/val/000000.jpg ...
    out_dir/annotations/train.json      images only (the unlabeled split)
    out_dir/annotations/train_gt.json   train ground truth, for analysis only
    out_dir/annotations/val.json        val ground truth
    out_dir/preview.png                 val images with their masks drawn

Every annotation also carries ``kind`` (the object kind's name); the json's
top level lists all names in ``kinds``.
"""
import colorsys
import json
import os
import os.path as osp
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.utils import ProgressBar
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage import filters, measure, segmentation

__all__ = [
    'KINDS', 'CATEGORIES', 'Cutout', 'Paste', 'Scene', 'SceneConfig',
    'load_cutouts', 'load_textures', 'visible_masks', 'scene_rng',
    'render_scene', 'mask_to_annotation', 'draw_instances', 'make_demo_dataset', 'disk_usage'
]

KINDS = ('coin', 'cup', 'rocket', 'photographer', 'horse')
CATEGORIES = [dict(id=1, name='object')]
SPLITS = ('train', 'val')
MAX_CUTOUT_SIDE = 256  # cut-outs are stored at most this large


@dataclass
class Cutout:
    """An object cut out of a photo.

    Attributes:
        kind (str): Object kind, one of :data:`KINDS`.
        rgb (np.ndarray): (h, w, 3) uint8 pixels.
        alpha (np.ndarray): (h, w) bool exact object mask.
        upright (bool): Whether the object has an up (small rotations only,
            no vertical flip).
    """
    kind: str
    rgb: np.ndarray
    alpha: np.ndarray
    upright: bool


@dataclass
class Paste:
    """One pasted object; its footprint is
    ``cv2.warpAffine(alpha as uint8 * 255, matrix, (W, H)) >= 128``.

    Attributes:
        kind (str): Object kind.
        cutout_index (int): Index into :func:`load_cutouts`.
        matrix (np.ndarray): (2, 3) affine map, cut-out pixel -> image pixel.
        footprint (np.ndarray): (H, W) bool pasted area before occlusion.
    """
    kind: str
    cutout_index: int
    matrix: np.ndarray
    footprint: np.ndarray


@dataclass
class Scene:
    """A composite (H, W, 3) uint8 RGB ``image``; ``pastes`` are bottom to
    top, all visible enough to be annotated; ``masks`` (n, H, W) bool are
    their visible parts."""
    image: np.ndarray
    pastes: List[Paste]
    masks: np.ndarray


@dataclass
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        image_size (int): Side of the square images, in pixels.
        min_objects (int): Fewest annotated objects per image.
        max_objects (int): Most objects pasted per image.
        scale_range (tuple[float, float]): Longest side of an object as a
            fraction of ``image_size`` (sampled log-uniformly).
        min_visible_fraction (float): An object whose visible area is below
            this fraction of its in-image footprint is removed from the scene.
        min_visible_pixels (int): Same, in pixels.
    """
    image_size: int = 320
    min_objects: int = 2
    max_objects: int = 6
    scale_range: Tuple[float, float] = (0.15, 0.5)
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 64

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(
                f'image_size must be >= 32, got {self.image_size}')
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError('need 1 <= min_objects <= max_objects, got '
                             f'{self.min_objects}, {self.max_objects}')
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f'bad scale_range {self.scale_range}')
        if not 0 <= self.min_visible_fraction <= 1:
            raise ValueError('min_visible_fraction must be in [0, 1], got '
                             f'{self.min_visible_fraction}')


# --------------------------------------------------------------- cut-outs
def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels = measure.label(mask)
    if labels.max() == 0:
        raise RuntimeError('cut-out extraction found no object')
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def _clean(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Opening, largest component, holes filled."""
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1])
    mask = ndi.binary_opening(mask, structure=disk <= radius)
    return ndi.binary_fill_holes(_largest_component(mask))


def _crop(kind: str, rgb: np.ndarray, mask: np.ndarray,
          upright: bool) -> Cutout:
    """Crop to the mask's box (2 px margin) and shrink to MAX_CUTOUT_SIDE."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rows, cols = np.nonzero(mask)
    y0, x0 = max(rows.min() - 2, 0), max(cols.min() - 2, 0)
    y1, x1 = rows.max() + 3, cols.max() + 3
    rgb, mask = rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    factor = MAX_CUTOUT_SIDE / max(mask.shape)
    if factor < 1:
        size = (round(mask.shape[1] * factor), round(mask.shape[0] * factor))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), size,
                          interpolation=cv2.INTER_AREA) >= 0.5
    return Cutout(kind, np.ascontiguousarray(rgb), mask, upright)


def _grabcut(rgb: np.ndarray, rect: Tuple[int, int, int, int]) -> np.ndarray:
    """Foreground of OpenCV's GrabCut inside ``rect`` (x, y, w, h)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's RNG
    labels = np.zeros(rgb.shape[:2], np.uint8)
    bg_model, fg_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(np.ascontiguousarray(rgb), labels, rect, bg_model, fg_model,
                5, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def _coin_cutouts() -> List[Cutout]:
    """The 24 coins: watershed of the Sobel map from dark/bright markers."""
    image = skdata.coins()
    markers = np.zeros(image.shape, np.int32)
    markers[image < 30], markers[image > 150] = 1, 2
    coins = segmentation.watershed(filters.sobel(image), markers) == 2
    coins = ndi.binary_opening(ndi.binary_fill_holes(coins), iterations=2)
    labels = measure.label(coins)
    return [
        _crop('coin', image, labels == r.label, upright=False)
        for r in measure.regionprops(labels) if r.area >= 500
    ]


def _horse_cutout() -> Cutout:
    """The horse silhouette, its coat made of blurred grass tinted brown."""
    silhouette = ~skdata.horse()
    grass = skdata.grass()[:silhouette.shape[0], :silhouette.shape[1]]
    coat = cv2.GaussianBlur(grass, (0, 0), 3).astype(np.float32)
    coat = 110 + 25 * (coat - coat.mean()) / coat.std()
    rgb = coat[..., None] * np.array([1.0, 0.62, 0.38])
    return _crop('horse', rgb.clip(0, 255).astype(np.uint8),
                 _clean(silhouette), upright=True)


@lru_cache(maxsize=1)
def _cached_cutouts() -> Tuple[Cutout, ...]:
    coffee, rocket, camera = skdata.coffee(), skdata.rocket(), skdata.camera()
    return tuple(_coin_cutouts() + [
        _crop('cup', coffee, _clean(_grabcut(coffee, (40, 10, 540, 385)), 8),
              upright=False),
        _crop('rocket', rocket, _clean(_grabcut(rocket, (290, 100, 90, 300))),
              upright=True),
        _crop('photographer', camera,
              _clean(_grabcut(camera, (0, 40, 330, 471))), upright=True),
        _horse_cutout(),
    ])


def load_cutouts() -> List[Cutout]:
    """All cut-outs, extracted deterministically from scikit-image's photos
    (cached in memory after the first call; about 3 s)."""
    return list(_cached_cutouts())


@lru_cache(maxsize=1)
def _cached_textures() -> Tuple[np.ndarray, ...]:
    return skdata.grass(), skdata.gravel(), skdata.brick()


def load_textures() -> List[np.ndarray]:
    """Grey (512, 512) uint8 background textures: grass, gravel, brick."""
    return list(_cached_textures())


# ----------------------------------------------------------------- scenes
def visible_masks(footprints: np.ndarray) -> np.ndarray:
    """(n, H, W) bool footprints, bottom to top -> (n, H, W) bool visible
    parts: each footprint minus the union of those above it."""
    visible = np.zeros_like(footprints, dtype=bool)
    covered = np.zeros(footprints.shape[1:], dtype=bool)
    for i in range(len(footprints) - 1, -1, -1):
        visible[i] = footprints[i] & ~covered
        covered |= footprints[i]
    return visible


def _keep_visible(footprints: np.ndarray, cfg: SceneConfig) -> List[int]:
    """Indices of footprints to keep: removes the least visible object until
    every remaining one is visible enough."""
    keep = list(range(len(footprints)))
    while keep:
        area = footprints[keep].sum(axis=(1, 2))
        shown = visible_masks(footprints[keep]).sum(axis=(1, 2))
        fraction = shown / np.maximum(area, 1)
        bad = (fraction < cfg.min_visible_fraction) | (
            shown < cfg.min_visible_pixels)
        if not bad.any():
            break
        keep.pop(int(np.argmin(np.where(bad, fraction, np.inf))))
    return keep


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a random texture, resized, rotated, tinted."""
    textures = load_textures()
    texture = textures[rng.integers(len(textures))]
    side = int(rng.uniform(0.4, 1.0) * texture.shape[0])
    y, x = rng.integers(texture.shape[0] - side + 1, size=2)
    crop = cv2.resize(texture[y:y + side, x:x + side], (size, size),
                      interpolation=cv2.INTER_AREA)
    crop = np.rot90(crop, rng.integers(4))
    gains = rng.uniform(0.45, 1.1, size=3)
    return (crop[..., None] * gains).clip(0, 255).astype(np.uint8)


def _placement(rng: np.random.Generator, cutout: Cutout,
               cfg: SceneConfig) -> np.ndarray:
    """Random (2, 3) affine matrix: flip, scale, rotate, translate."""
    size = cfg.image_size
    low, high = cfg.scale_range
    longest = size * np.exp(rng.uniform(np.log(low), np.log(high)))
    return _affine(rng, cutout, longest, (size, size))


def _affine(rng: np.random.Generator,
            cutout: Cutout,
            longest: float,
            dsize: Tuple[int, int],
            centre_low=0.1,
            centre_high=0.9) -> np.ndarray:
    """Random (2, 3) affine matrix that scales the cut-out's longest side to
    ``longest`` pixels, flips and rotates it, and puts its centre at
    ``uniform(centre_low, centre_high)`` times (W - 1, H - 1) of an image of
    ``dsize`` (W, H); the bounds may be scalars or (x, y) pairs."""
    scale = longest / max(cutout.alpha.shape)
    angle = np.deg2rad(rng.uniform(-20, 20) if cutout.upright else rng.
                       uniform(-180, 180))
    flip_x = rng.choice([-1.0, 1.0])
    flip_y = 1.0 if cutout.upright else rng.choice([-1.0, 1.0])
    cos, sin = np.cos(angle), np.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag(
        [scale * flip_x, scale * flip_y])
    src_centre = (np.array(cutout.alpha.shape[::-1]) - 1) / 2
    dst_centre = rng.uniform(centre_low, centre_high, size=2) * (
        np.array(dsize) - 1)
    return np.hstack([linear, (dst_centre - linear @ src_centre)[:, None]])


def _dsize(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    """``size`` (square side) or (W, H) -> (W, H)."""
    return (size, size) if np.isscalar(size) else tuple(size)


def _warp_footprint(cutout: Cutout, matrix: np.ndarray,
                    size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """(H, W) bool footprint; ``size`` is a square side or (W, H)."""
    alpha = cutout.alpha.astype(np.uint8) * 255
    return cv2.warpAffine(alpha, matrix, _dsize(size),
                          flags=cv2.INTER_LINEAR) >= 128


def _warp_pixels(rng: np.random.Generator, cutout: Cutout,
                 matrix: np.ndarray,
                 size: Union[int, Tuple[int, int]]) -> np.ndarray:
    """Warped, colour-jittered cut-out pixels, (H, W, 3) uint8; ``size`` is a
    square side or (W, H)."""
    rgb = cutout.rgb
    shrink = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if shrink < 1:  # anti-alias before shrinking
        rgb = cv2.GaussianBlur(rgb, (0, 0), 0.5 / shrink)
    warped = cv2.warpAffine(rgb, matrix, _dsize(size),
                            flags=cv2.INTER_LINEAR).astype(np.float32)
    grey = not np.any(cutout.rgb.max(axis=2) != cutout.rgb.min(axis=2))
    gains = rng.uniform(0.5, 1.2, size=3) if grey else rng.uniform(
        0.75, 1.25) * rng.uniform(0.9, 1.1, size=3)
    return (warped * gains).clip(0, 255).astype(np.uint8)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of the other images."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def render_scene(seed: int,
                 split: str,
                 index: int,
                 cfg: Optional[SceneConfig] = None) -> Scene:
    """Render image ``index`` of ``split`` deterministically for ``seed``.

    Objects are pasted bottom to top; objects that end up too occluded are
    removed from the scene (never left unannotated in the image). Up to 20
    draws are tried to get at least ``cfg.min_objects`` objects.
    """
    cfg = cfg or SceneConfig()
    rng = scene_rng(seed, split, index)
    cutouts, size = load_cutouts(), cfg.image_size
    kind_members = [[i for i, c in enumerate(cutouts) if c.kind == kind]
                    for kind in KINDS]
    for _ in range(20):
        pastes = []
        for _ in range(rng.integers(cfg.min_objects, cfg.max_objects + 1)):
            chosen = int(rng.choice(kind_members[rng.integers(len(KINDS))]))
            matrix = _placement(rng, cutouts[chosen], cfg)
            footprint = _warp_footprint(cutouts[chosen], matrix, size)
            pastes.append(
                Paste(cutouts[chosen].kind, chosen, matrix, footprint))
        keep = _keep_visible(np.stack([p.footprint for p in pastes]), cfg)
        if len(keep) >= cfg.min_objects:
            break
    else:
        raise RuntimeError(
            f'could not place {cfg.min_objects} visible objects in 20 tries; '
            'lower min_objects or scale_range')
    pastes = [pastes[i] for i in keep]
    image = _background(rng, size)
    for paste in pastes:
        pixels = _warp_pixels(rng, cutouts[paste.cutout_index], paste.matrix,
                              size)
        image[paste.footprint] = pixels[paste.footprint]
    masks = visible_masks(np.stack([p.footprint for p in pastes]))
    return Scene(image, pastes, masks)


def mask_to_annotation(mask: np.ndarray) -> Dict:
    """(H, W) bool mask -> COCO fields: RLE ``segmentation``, tight XYWH
    ``bbox`` and ``area`` (pixel count)."""
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise ValueError('empty mask has no annotation')
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x0, y0 = int(cols.min()), int(rows.min())
    return dict(
        segmentation=dict(size=list(rle['size']),
                          counts=rle['counts'].decode('ascii')),
        bbox=[x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1],
        area=int(len(rows)))


# ---------------------------------------------------------------- drawing
def _palette(n: int) -> List[Tuple[int, int, int]]:
    """n distinct saturated RGB colours (golden-ratio hue steps)."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb(
            (0.1 + i * 0.618034) % 1.0, 0.85, 1.0)) for i in range(n)
    ]


def draw_instances(image: np.ndarray,
                   masks: np.ndarray,
                   scores: Optional[Sequence[float]] = None,
                   alpha: float = 0.45) -> np.ndarray:
    """Draw masks filled in distinct colours with outlines.

    Args:
        image (np.ndarray): (H, W, 3) uint8 image (any channel order; the
            palette is RGB).
        masks (np.ndarray): (n, H, W) bool masks, drawn in order.
        scores (Sequence[float], optional): n scores, written at the top-left
            of each mask's box.
        alpha (float): Opacity of the fill.

    Returns:
        np.ndarray: (H, W, 3) uint8 drawing; the input is not modified.
    """
    image, masks = np.asarray(image), np.asarray(masks)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError('image must be (H, W, 3) uint8, got '
                         f'{image.shape} {image.dtype}')
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f'masks must be (n, {image.shape[0]}, '
                         f'{image.shape[1]}), got {masks.shape}')
    if scores is not None and len(scores) != len(masks):
        raise ValueError(f'{len(scores)} scores for {len(masks)} masks')
    masks = masks.astype(bool)
    canvas = image.astype(np.float32)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    outlines = []
    for mask, colour in zip(masks, _palette(len(masks))):
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.array(colour)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outlines.append((contours, colour))
    canvas = np.ascontiguousarray(canvas.round().astype(np.uint8))
    for contours, colour in outlines:
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    for i, mask in enumerate(masks if scores is not None else []):
        rows, cols = np.nonzero(mask)
        if len(rows):
            cv2.putText(canvas, f'{scores[i]:.2f}',
                        (int(cols.min()), int(rows.min()) + 10),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35 * thickness,
                        (255, 255, 255), thickness, cv2.LINE_AA)
    return canvas


def _grid(tiles: List[np.ndarray], columns: int = 4) -> np.ndarray:
    rows = -(-len(tiles) // columns)
    tiles = tiles + [np.zeros_like(tiles[0])] * (rows * columns - len(tiles))
    return np.vstack([
        np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)
    ])


# ---------------------------------------------------------------- dataset
def disk_usage(folder: str) -> int:
    """Bytes of every file below ``folder``."""
    return sum(osp.getsize(osp.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def _prepare_out_dir(out_dir: str) -> None:
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(
            f'output path {out_dir!r} exists and is not a directory')
    for sub in (*SPLITS, 'annotations'):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    for split in SPLITS:  # stale images of an earlier, larger run
        for name in os.listdir(osp.join(out_dir, split)):
            if name.endswith('.jpg'):
                os.remove(osp.join(out_dir, split, name))


def _write_image(path: str, rgb: np.ndarray, params: Sequence[int] = ()):
    """Write (H, W, 3) RGB, or (H, W) grey as a single-channel file."""
    pixels = rgb[..., ::-1] if rgb.ndim == 3 else rgb
    if not cv2.imwrite(path, np.ascontiguousarray(pixels), params):
        raise OSError(f'could not write {path!r}')


def _write_json(path: str, content: Dict) -> None:
    with open(path, 'w') as f:
        json.dump(content, f, separators=(',', ':'))


def make_demo_dataset(out_dir: str,
                      num_train: int = 300,
                      num_val: int = 50,
                      image_size: int = 320,
                      seed: int = 0,
                      min_objects: int = 2,
                      max_objects: int = 6,
                      num_preview: int = 8,
                      jpeg_quality: int = 95,
                      progress: bool = True) -> Dict:
    """Write the demo dataset (layout in the module docstring).

    Same arguments give byte-identical json files. Existing ``*.jpg`` in
    ``out_dir/{train,val}`` are replaced.

    Returns:
        dict: ``out_dir``, ``kinds``, per split ``num_images`` and
        ``num_instances``, and the written ``files`` (paths).
    """
    if num_train < 0 or num_val < 0 or num_train + num_val == 0:
        raise ValueError('need num_train, num_val >= 0 and at least one '
                         f'image, got {num_train}, {num_val}')
    cfg = SceneConfig(image_size=image_size, min_objects=min_objects,
                      max_objects=max_objects)
    _prepare_out_dir(out_dir)
    header = dict(
        info=dict(description='FreeSOLO demo scenes: scikit-image cut-outs '
                  'pasted on textures', seed=seed, image_size=image_size),
        categories=CATEGORIES,
        kinds=list(KINDS))
    load_cutouts()  # extract once, before the progress bar starts
    bar = ProgressBar(num_train + num_val) if progress else None
    result = dict(out_dir=out_dir, kinds=list(KINDS), files={})
    previews = []
    for split, count in zip(SPLITS, (num_train, num_val)):
        images, annotations = [], []
        for index in range(count):
            scene = render_scene(seed, split, index, cfg)
            file_name = f'{index:06d}.jpg'
            _write_image(
                osp.join(out_dir, split, file_name), scene.image,
                [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            images.append(dict(id=index + 1, file_name=file_name,
                               width=image_size, height=image_size))
            for paste, mask in zip(scene.pastes, scene.masks):
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index + 1,
                    category_id=1, iscrowd=0, kind=paste.kind,
                    **mask_to_annotation(mask)))
            if len(previews) < num_preview and (split == 'val'
                                                or num_val == 0):
                previews.append(draw_instances(scene.image, scene.masks))
            if bar is not None:
                bar.update()
        ann_dir = osp.join(out_dir, 'annotations')
        if split == 'train':
            files = dict(train_json=(images, []),
                         train_gt_json=(images, annotations))
        else:
            files = dict(val_json=(images, annotations))
        for key, (imgs, anns) in files.items():
            path = osp.join(ann_dir, key[:-5] + '.json')
            _write_json(path, dict(header, images=imgs, annotations=anns))
            result['files'][key] = path
        result[split] = dict(num_images=count,
                             num_instances=len(annotations))
    if bar is not None:
        bar.file.write('\n')
    if previews:
        path = osp.join(out_dir, 'preview.png')
        _write_image(path, _grid(previews))
        result['files']['preview'] = path
    return result
