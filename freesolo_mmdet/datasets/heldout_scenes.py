"""Held-out development benchmark: composite scenes with exact instance masks
made from object kinds and background textures that the demo scenes
(:mod:`.demo_scenes`) never use.

Objects are cut out of other scikit-image photos (astronaut, logo, fundus,
phantom, cell) or drawn procedurally (star, blob, ring: random shapes filled
with crops of the cat photo ``chelsea`` or the astronaut photo), and pasted on
tiled crops of other textures (Hubble deep field, immunohistochemistry, text,
microaneurysms); sources and licences are listed in ``DEMO_DATA_SOURCES.md``.
Compared with the demo, images vary in size and aspect (sides drawn in
256-640 px), objects are 2-30% of the shorter image side (log-uniform, so
many are small), some scenes are crowds of 20-50 small objects of one kind and
about 20% of the images are grayscale, written as single-channel files.

The ground truth is exact by construction, as in the demo: a mask is the
pasted footprint minus every footprint pasted above it, and objects left too
occluded are removed from the image, never left unannotated. Every image is
drawn from its own generator (:func:`heldout_rng`), so image ``i`` does not
depend on how many images are written.

Layout written by :func:`make_heldout_dataset`::

    out_dir/images/000000.jpg ...   (some .png; 3-channel RGB or 1-channel)
    out_dir/annotations/gt.json     COCO, one class-agnostic category
    out_dir/preview.png             the first images with their masks drawn

Every annotation carries ``kind``; every image ``channels`` (1 or 3) and
``crowd`` (whether it is a crowded scene); the json's top level lists all
kind names in ``kinds``.
"""
import os
import os.path as osp
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from mmengine.utils import ProgressBar
from skimage import data as skdata
from skimage import morphology

from .demo_scenes import (CATEGORIES, Cutout, Paste, Scene, _affine, _clean,
                          _crop, _grid, _keep_visible, _warp_footprint,
                          _warp_pixels, _write_image, _write_json,
                          draw_instances, mask_to_annotation, visible_masks)
from .demo_scenes import KINDS as DEMO_KINDS

__all__ = [
    'HELDOUT_KINDS', 'PHOTO_KINDS', 'SHAPE_KINDS', 'TEXTURES', 'HeldoutConfig',
    'HeldoutScene', 'load_heldout_cutouts', 'load_heldout_textures',
    'heldout_rng', 'render_heldout_scene', 'make_heldout_dataset'
]

PHOTO_KINDS = ('astronaut', 'logo', 'fundus', 'phantom', 'cell')
SHAPE_KINDS = ('star', 'blob', 'ring')  # procedural, 8 variants each
HELDOUT_KINDS = PHOTO_KINDS + SHAPE_KINDS
TEXTURES = ('hubble_deep_field', 'immunohistochemistry', 'text',
            'microaneurysms')
SHAPE_VARIANTS = 8
SHAPE_SIDE = 192  # procedural cut-outs are drawn on this canvas
STREAM = 0x48454c44  # 'HELD': keeps the generators apart from the demo's
PREVIEW_TILE = 256
IMAGE_NAME = re.compile(r'\d{6}\.(jpg|png)$')
assert not set(HELDOUT_KINDS) & set(DEMO_KINDS)


@dataclass
class HeldoutConfig:
    """How held-out scenes are drawn.

    Attributes:
        side_range (tuple[int, int]): Width and height are drawn
            independently, uniformly in this range (pixels).
        scale_range (tuple[float, float]): Longest side of an object's
            cut-out as a fraction of the image's shorter side, log-uniform.
        min_objects (int): Fewest annotated objects in a normal scene.
        max_objects (int): Most objects pasted in a normal scene.
        crowd_fraction (float): Fraction of crowded scenes.
        crowd_objects (tuple[int, int]): Fewest annotated / most pasted
            objects of a crowd (all of one kind).
        crowd_scale_range (tuple[float, float]): Range of a crowd's base
            scale (log-uniform); each member varies it by x0.8-1.25, kept
            inside ``scale_range``.
        grey_fraction (float): Fraction of grayscale images.
        png_fraction (float): Chance that an image is written as PNG
            instead of JPEG.
        min_visible_fraction (float): An object whose visible area is below
            this fraction of its in-image footprint is removed from the scene.
        min_visible_pixels (int): Same, in pixels.
    """
    side_range: Tuple[int, int] = (256, 640)
    scale_range: Tuple[float, float] = (0.02, 0.30)
    min_objects: int = 1
    max_objects: int = 8
    crowd_fraction: float = 0.15
    crowd_objects: Tuple[int, int] = (20, 50)
    crowd_scale_range: Tuple[float, float] = (0.03, 0.07)
    grey_fraction: float = 0.2
    png_fraction: float = 0.2
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 16

    def __post_init__(self) -> None:
        low, high = self.side_range
        if not 32 <= low <= high:
            raise ValueError(f'need 32 <= side_range[0] <= side_range[1], '
                             f'got {self.side_range}')
        for name in ('scale_range', 'crowd_scale_range'):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f'need 0 < low <= high <= 1 in {name}, got '
                                 f'{getattr(self, name)}')
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError('need 1 <= min_objects <= max_objects, got '
                             f'{self.min_objects}, {self.max_objects}')
        if not 1 <= self.crowd_objects[0] <= self.crowd_objects[1]:
            raise ValueError(f'bad crowd_objects {self.crowd_objects}')
        for name in ('crowd_fraction', 'grey_fraction', 'png_fraction',
                     'min_visible_fraction'):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f'{name} must be in [0, 1], got '
                                 f'{getattr(self, name)}')


@dataclass
class HeldoutScene(Scene):
    """A :class:`Scene` whose ``image`` is (H, W, 3) RGB, or (H, W) when
    ``grey``; ``crowd`` tells a crowded scene and ``file_name`` the name
    (extension included) the image is written under."""
    grey: bool = False
    crowd: bool = False
    file_name: str = ''


# --------------------------------------------------------------- cut-outs
def _astronaut_cutout() -> Cutout:
    """Eileen Collins, head to the picture's bottom edge: GrabCut started
    from hand-placed boxes (sure face, neck and suit; probable person)."""
    rgb = skdata.astronaut()
    labels = np.full(rgb.shape[:2], cv2.GC_BGD, np.uint8)
    labels[10:, 15:370] = cv2.GC_PR_BGD
    cv2.ellipse(labels, (215, 120), (95, 120), 0, 0, 360, cv2.GC_PR_FGD, -1)
    cv2.rectangle(labels, (40, 250), (330, 511), cv2.GC_PR_FGD, -1)
    cv2.ellipse(labels, (222, 125), (45, 60), 0, 0, 360, cv2.GC_FGD, -1)
    cv2.rectangle(labels, (120, 320), (240, 500), cv2.GC_FGD, -1)
    cv2.rectangle(labels, (175, 175), (265, 290), cv2.GC_FGD, -1)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's RNG
    bg_model, fg_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(rgb, labels, None, bg_model, fg_model, 5,
                cv2.GC_INIT_WITH_MASK)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return _crop('astronaut', rgb, _clean(mask, 3), upright=True)


def _photo_cutouts() -> List[Cutout]:
    logo = skdata.logo()[..., :3]  # its alpha is opaque everywhere
    retina = skdata.retina()
    phantom = (skdata.shepp_logan_phantom() * 255).round().astype(np.uint8)
    cell = skdata.cell()
    return [
        _astronaut_cutout(),
        # a disc on white: convex hull of the non-white pixels
        _crop('logo', logo,
              morphology.convex_hull_image(logo.min(axis=2) < 230),
              upright=False),
        # the fundus disc on black
        _crop('fundus', retina, _clean(retina.mean(axis=2) > 20),
              upright=False),
        _crop('phantom', phantom, _clean(phantom > 0), upright=False),
        # the bright cell, without its dark halo
        _crop('cell', cell, _clean(cv2.GaussianBlur(cell, (0, 0), 2) > 120),
              upright=False),
    ]


def _fill(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A random SHAPE_SIDE square crop of ``photo``, randomly rotated."""
    side = int(rng.uniform(0.3, 0.6) * min(photo.shape[:2]))
    y = rng.integers(photo.shape[0] - side + 1)
    x = rng.integers(photo.shape[1] - side + 1)
    crop = cv2.resize(photo[y:y + side, x:x + side], (SHAPE_SIDE, SHAPE_SIDE),
                      interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.rot90(crop, rng.integers(4)))


def _shape_mask(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A random filled star, smooth blob or elliptic ring on the canvas."""
    centre, radius = (SHAPE_SIDE - 1) / 2, SHAPE_SIDE * 0.45
    canvas = np.zeros((SHAPE_SIDE, SHAPE_SIDE), np.uint8)
    if kind == 'ring':
        outer = (radius, radius * rng.uniform(0.55, 1.0))
        inner = rng.uniform(0.45, 0.7)
        angle = rng.uniform(0, 180)
        for axes, value in ((outer, 1), ((outer[0] * inner,
                                          outer[1] * inner), 0)):
            cv2.ellipse(canvas, (round(centre), round(centre)),
                        (round(axes[0]), round(axes[1])), angle, 0, 360,
                        value, -1)
        return canvas.astype(bool)
    if kind == 'star':
        points = int(rng.integers(5, 10))
        theta = np.arange(2 * points) * np.pi / points + rng.uniform(0, np.pi)
        ratio = rng.uniform(0.35, 0.65)
        r = np.where(np.arange(2 * points) % 2 == 0, 1.0, ratio)
    else:  # blob: a low-frequency random radius function
        theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        r = np.ones_like(theta)
        for k in range(2, 6):
            r += rng.uniform(0, 0.3 / k) * np.cos(k * theta
                                                  + rng.uniform(0, 2 * np.pi))
        r /= r.max()
    xy = centre + radius * r[:, None] * np.stack(
        [np.cos(theta), np.sin(theta)], axis=1)
    cv2.fillPoly(canvas, [np.round(xy).astype(np.int32)], 1)
    return canvas.astype(bool)


def _shape_cutouts() -> List[Cutout]:
    """SHAPE_VARIANTS cut-outs of each procedural kind, from a fixed seed:
    stars and rings filled with the cat photo, blobs with the astronaut."""
    rng = np.random.default_rng([STREAM, 0])
    photos = dict(star=skdata.chelsea(), blob=skdata.astronaut(),
                  ring=skdata.chelsea())
    return [
        _crop(kind, _fill(rng, photos[kind]), _shape_mask(rng, kind),
              upright=False) for kind in SHAPE_KINDS
        for _ in range(SHAPE_VARIANTS)
    ]


@lru_cache(maxsize=1)
def _cached_cutouts() -> Tuple[Cutout, ...]:
    return tuple(_photo_cutouts() + _shape_cutouts())


def load_heldout_cutouts() -> List[Cutout]:
    """All held-out cut-outs (kinds :data:`HELDOUT_KINDS`), extracted
    deterministically; cached in memory after the first call (about 2 s)."""
    return list(_cached_cutouts())


@lru_cache(maxsize=1)
def _cached_textures() -> Tuple[np.ndarray, ...]:
    return tuple(getattr(skdata, name)() for name in TEXTURES)


def load_heldout_textures() -> List[np.ndarray]:
    """The background textures :data:`TEXTURES`: uint8, (h, w, 3) RGB or
    (h, w) grey."""
    return list(_cached_textures())


# ----------------------------------------------------------------- scenes
def heldout_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of the other images and
    of the demo's generators."""
    return np.random.default_rng([seed, STREAM, index])


def _scene_type(seed: int, index: int,
                cfg: HeldoutConfig) -> Tuple[bool, bool]:
    """(crowd, grey) of image ``index``. Each is ``u < fraction`` for ``u``
    the index-th point of a Weyl sequence (index times an irrational, modulo
    1, from a random start per seed): a function of (seed, index) only, but
    any run of n images holds ``fraction * n`` of each, give or take one."""
    start = np.random.default_rng([seed, STREAM]).random(2)
    steps = np.array([(np.sqrt(5) - 1) / 2, np.sqrt(2) - 1])
    u = (start + index * steps) % 1.0
    return bool(u[0] < cfg.crowd_fraction), bool(u[1] < cfg.grey_fraction)


def _background(rng: np.random.Generator, width: int,
                height: int) -> np.ndarray:
    """A random texture, mirror-tiled where too small, zoomed x0.5-2,
    cropped to (height, width, 3), flipped and tinted."""
    textures = load_heldout_textures()
    texture = textures[rng.integers(len(textures))]
    zoom = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    crop_h, crop_w = int(np.ceil(height / zoom)), int(np.ceil(width / zoom))
    pad = [(0, max(crop_h - texture.shape[0], 0)),
           (0, max(crop_w - texture.shape[1], 0))] + [(0, 0)] * (
               texture.ndim - 2)
    tiled = np.pad(texture, pad, mode='symmetric')
    y = rng.integers(tiled.shape[0] - crop_h + 1)
    x = rng.integers(tiled.shape[1] - crop_w + 1)
    crop = cv2.resize(tiled[y:y + crop_h, x:x + crop_w], (width, height),
                      interpolation=cv2.INTER_AREA if zoom < 1 else
                      cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    if crop.ndim == 2:
        tinted = crop[..., None] * rng.uniform(0.45, 1.1, size=3)
    else:
        tinted = crop * (rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, 3))
    return tinted.clip(0, 255).astype(np.uint8)


def _draw_pastes(rng: np.random.Generator, cutouts: List[Cutout],
                 kinds: List[str], longest: np.ndarray, width: int,
                 height: int, centre_low=0.1, centre_high=0.9) -> List[Paste]:
    members = {
        kind: [i for i, c in enumerate(cutouts) if c.kind == kind]
        for kind in HELDOUT_KINDS
    }
    pastes = []
    for kind, side in zip(kinds, longest):
        chosen = int(rng.choice(members[kind]))
        matrix = _affine(rng, cutouts[chosen], side, (width, height),
                         centre_low, centre_high)
        footprint = _warp_footprint(cutouts[chosen], matrix, (width, height))
        pastes.append(Paste(kind, chosen, matrix, footprint))
    return pastes


def render_heldout_scene(seed: int,
                         index: int,
                         cfg: Optional[HeldoutConfig] = None
                         ) -> HeldoutScene:
    """Render held-out image ``index`` deterministically for ``seed``.

    A normal scene pastes ``min_objects``-``max_objects`` objects of random
    kinds; a crowd pastes up to ``crowd_objects[1]`` objects of one kind at
    similar small scales, centred in a random part of the image. Objects end
    up bottom to top; the too occluded ones are removed (never left
    unannotated). Up to 20 draws are tried to keep enough objects.
    """
    cfg = cfg or HeldoutConfig()
    rng = heldout_rng(seed, index)
    cutouts = load_heldout_cutouts()
    width, height = (int(v) for v in rng.integers(
        cfg.side_range[0], cfg.side_range[1] + 1, size=2))
    crowd, grey = _scene_type(seed, index, cfg)
    extension = '.png' if rng.random() < cfg.png_fraction else '.jpg'
    short = min(width, height)
    log_low, log_high = np.log(cfg.scale_range)
    need = cfg.crowd_objects[0] if crowd else cfg.min_objects
    for _ in range(20):
        if crowd:
            count = int(rng.integers(cfg.crowd_objects[0],
                                     cfg.crowd_objects[1] + 1))
            kinds = [HELDOUT_KINDS[rng.integers(len(HELDOUT_KINDS))]] * count
            base = np.exp(rng.uniform(*np.log(cfg.crowd_scale_range)))
            fraction = np.clip(base * rng.uniform(0.8, 1.25, count),
                               *cfg.scale_range)
            span = rng.uniform(0.35, 0.8, size=2)
            centre_low = rng.uniform(0, 1 - span)
            centre_high = centre_low + span
        else:
            count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
            kinds = [
                HELDOUT_KINDS[i]
                for i in rng.integers(len(HELDOUT_KINDS), size=count)
            ]
            fraction = np.exp(rng.uniform(log_low, log_high, count))
            centre_low, centre_high = 0.1, 0.9
        pastes = _draw_pastes(rng, cutouts, kinds, fraction * short, width,
                              height, centre_low, centre_high)
        keep = _keep_visible(np.stack([p.footprint for p in pastes]), cfg)
        if len(keep) >= need:
            break
    else:
        raise RuntimeError(f'could not place {need} visible objects in 20 '
                           'tries; lower min_objects or crowd_objects')
    pastes = [pastes[i] for i in keep]
    image = _background(rng, width, height)
    for paste in pastes:
        pixels = _warp_pixels(rng, cutouts[paste.cutout_index], paste.matrix,
                              (width, height))
        image[paste.footprint] = pixels[paste.footprint]
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    masks = visible_masks(np.stack([p.footprint for p in pastes]))
    return HeldoutScene(image, pastes, masks, grey=grey, crowd=crowd,
                        file_name=f'{index:06d}{extension}')


# ---------------------------------------------------------------- dataset
def _prepare_out_dir(out_dir: str) -> None:
    """Create ``out_dir``; an existing one must hold only an earlier output
    (whose images are then removed), so that nothing else is overwritten."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise NotADirectoryError(
            f'output path {out_dir!r} exists and is not a directory')
    expected = dict(images=IMAGE_NAME, annotations=re.compile(r'gt\.json$'))
    if osp.isdir(out_dir):
        foreign = sorted(
            set(os.listdir(out_dir)) - {'images', 'annotations',
                                        'preview.png'})
        for sub, pattern in expected.items():
            path = osp.join(out_dir, sub)
            if osp.exists(path) and not osp.isdir(path):
                foreign.append(sub)
            elif osp.isdir(path):
                foreign += [
                    osp.join(sub, name) for name in sorted(os.listdir(path))
                    if not pattern.match(name)
                ]
        if foreign:
            raise FileExistsError(
                f'output folder {out_dir!r} is not empty and is not an '
                f'earlier held-out output; unexpected: {foreign[:5]}')
    for sub in expected:
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    for name in os.listdir(osp.join(out_dir, 'images')):  # earlier images
        os.remove(osp.join(out_dir, 'images', name))


def _preview_tile(scene: HeldoutScene) -> np.ndarray:
    """The scene with its masks drawn, fit in a PREVIEW_TILE square."""
    rgb = np.repeat(scene.image[..., None], 3, 2) if scene.grey else \
        scene.image
    drawing = draw_instances(rgb, scene.masks)
    factor = PREVIEW_TILE / max(drawing.shape[:2])
    size = (max(round(drawing.shape[1] * factor), 1),
            max(round(drawing.shape[0] * factor), 1))
    tile = np.zeros((PREVIEW_TILE, PREVIEW_TILE, 3), np.uint8)
    tile[:size[1], :size[0]] = cv2.resize(drawing, size,
                                          interpolation=cv2.INTER_AREA)
    return tile


def make_heldout_dataset(out_dir: str,
                         num_images: int = 60,
                         seed: int = 0,
                         cfg: Optional[HeldoutConfig] = None,
                         num_preview: int = 8,
                         jpeg_quality: int = 95,
                         progress: bool = True) -> Dict:
    """Write the held-out benchmark (layout in the module docstring).

    Same arguments give byte-identical files. ``out_dir`` must be absent,
    empty or an earlier output of this function (its images are replaced).

    Returns:
        dict: ``out_dir``, ``kinds``, ``num_images``, ``num_instances``,
        ``instances_per_image`` (min, max), ``widths`` and ``heights``
        (min, max), ``num_grey``, ``num_crowd`` and the written ``files``.
    """
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if not 0 <= jpeg_quality <= 100:
        raise ValueError(f'jpeg_quality must be in [0, 100], got '
                         f'{jpeg_quality}')
    cfg = cfg or HeldoutConfig()
    _prepare_out_dir(out_dir)
    load_heldout_cutouts()  # extract once, before the progress bar starts
    load_heldout_textures()
    bar = ProgressBar(num_images) if progress else None
    images, annotations, previews, counts = [], [], [], []
    num_grey = num_crowd = 0
    for index in range(num_images):
        scene = render_heldout_scene(seed, index, cfg)
        height, width = scene.image.shape[:2]
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] \
            if scene.file_name.endswith('.jpg') else []
        _write_image(osp.join(out_dir, 'images', scene.file_name),
                     scene.image, params)
        images.append(dict(id=index + 1, file_name=scene.file_name,
                           width=width, height=height,
                           channels=1 if scene.grey else 3,
                           crowd=scene.crowd))
        for paste, mask in zip(scene.pastes, scene.masks):
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=1,
                iscrowd=0, kind=paste.kind, **mask_to_annotation(mask)))
        counts.append(len(scene.pastes))
        num_grey += scene.grey
        num_crowd += scene.crowd
        if len(previews) < num_preview:
            previews.append(_preview_tile(scene))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.file.write('\n')
    gt_path = osp.join(out_dir, 'annotations', 'gt.json')
    _write_json(gt_path, dict(
        info=dict(description='FreeSOLO held-out scenes: kinds and textures '
                  'the demo does not use', seed=seed),
        categories=CATEGORIES, kinds=list(HELDOUT_KINDS), images=images,
        annotations=annotations))
    files = dict(gt_json=gt_path)
    preview_path = osp.join(out_dir, 'preview.png')
    if previews:
        files['preview'] = preview_path
        _write_image(preview_path, _grid(previews))
    elif osp.exists(preview_path):  # an earlier run's
        os.remove(preview_path)
    return dict(
        out_dir=out_dir, kinds=list(HELDOUT_KINDS), num_images=num_images,
        num_instances=len(annotations),
        instances_per_image=(min(counts), max(counts)),
        widths=(min(i['width'] for i in images),
                max(i['width'] for i in images)),
        heights=(min(i['height'] for i in images),
                 max(i['height'] for i in images)),
        num_grey=num_grey, num_crowd=num_crowd, files=files)
