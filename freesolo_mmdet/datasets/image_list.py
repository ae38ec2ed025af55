"""Lists of image files for the inference tools (Free Mask, pseudo labels), and a dataset that
runs a test pipeline over them, turning an unreadable image into an error message, not a crash."""
import argparse
import copy
import json
import os
import os.path as osp
import re
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.runner import load_checkpoint
from torch.utils.data import Dataset

from mmdet.registry import MODELS

__all__ = [
    'add_image_source_arguments', 'check_image_source_arguments', 'list_images', 'ImagePipelineDataset',
    'build_inference_model'
]


def add_image_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options of :func:`list_images`: ``--images DIR | --ann-file J --img-prefix DIR``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', help='folder of images, searched recursively (every file: read, or reported)')
    source.add_argument('--ann-file', help='COCO json whose "images" are processed (ids and file names kept)')
    parser.add_argument('--img-prefix', help='folder that the file_names of --ann-file are relative to')


def check_image_source_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error when ``--img-prefix`` and ``--ann-file`` don't come together."""
    if args.ann_file and not args.img_prefix:
        parser.error('--ann-file needs --img-prefix')
    if args.images and args.img_prefix:
        parser.error('--img-prefix only goes with --ann-file')


def _walk_files(images_dir: str) -> List[str]:
    """Relative ``/``-separated paths of the files under ``images_dir`` (see :func:`list_images`)."""
    seen_dirs = set()
    names = []

    def raise_error(error: OSError) -> None:
        raise OSError(f'--images: cannot list folder {error.filename}: {error.strerror or error}') from error

    for root, dirs, files in os.walk(images_dir, onerror=raise_error, followlinks=True):
        real = osp.realpath(root)
        if real in seen_dirs:  # reached again through a link (or a loop): walked once already
            dirs[:] = []
            continue
        seen_dirs.add(real)
        # depth first, names sorted as the paths they start ('a-b/' < 'a/'): folders come in sorted
        # order of their paths, so a folder reached by two paths is walked under the one that sorts first
        dirs.sort(key=lambda name: name + '/')
        for name in files:
            path = osp.join(root, name)
            if osp.isfile(path) or not osp.exists(path):  # skips FIFOs, sockets, devices; keeps dead links
                names.append(osp.relpath(path, images_dir).replace(os.sep, '/'))
    return sorted(names)


def list_images(images_dir: Optional[str] = None,
                ann_file: Optional[str] = None,
                img_prefix: Optional[str] = None) -> List[dict]:
    """``[dict(id, file_name, path)]`` of the files of a folder or of the ``images`` of a COCO json.

    A folder (``images_dir``) is searched recursively and **every** file in it is listed, whatever its
    name or extension, hidden files (``.name``) and files in hidden folders included: each is then either
    read or, when it is not an image (``notes.txt``, ``.DS_Store``), reported with its reason by
    :class:`ImagePipelineDataset`, never skipped in silence. Links are followed, but each folder (by its
    real path) is walked once, under the path that comes first in the sorted walk (a folder before its
    subfolders): a loop such as ``loop -> .`` or two links to one folder list its files once. A link to a
    file is listed under its own name (even when another name points to the same file); a dead link is
    listed (and reported as unreadable). FIFOs, sockets and devices are not listed (reading them would
    block). ``file_name`` is the ``/``-separated path relative to ``images_dir``; images are sorted by it
    and numbered 1..N. A folder that cannot be listed raises ``OSError``; one without any file
    ``FileNotFoundError``.

    With ``ann_file``, the ``images`` of that COCO json are returned in its order, ids kept, ``path``
    under ``img_prefix``.
    """
    if images_dir is not None:
        if not osp.isdir(images_dir):
            raise FileNotFoundError(f'--images: no such folder: {images_dir}')
        names = _walk_files(images_dir)
        if not names:
            raise FileNotFoundError(f'--images: no file in {images_dir} (searched recursively)')
        return [dict(id=i, file_name=name, path=osp.join(images_dir, name)) for i, name in enumerate(names, 1)]
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'--ann-file: no such file: {ann_file}')
    try:
        with open(ann_file) as f:
            entries = json.load(f)['images']
        images = [dict(id=int(e['id']), file_name=e['file_name'], path=osp.join(img_prefix, e['file_name']))
                  for e in entries]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f'--ann-file {ann_file} is not a COCO json with an "images" list '
                         f'of {{"id", "file_name"}}: {type(e).__name__}: {e}') from e
    if len({image['id'] for image in images}) != len(images):
        raise ValueError(f'--ann-file {ann_file}: image ids are not unique')
    return images


class ImagePipelineDataset(Dataset):
    """Runs a test pipeline on each image; an image that fails yields its error instead.

    Args:
        images (Sequence[dict]): ``id``, ``file_name`` and ``path`` of each image.
        pipeline (list[dict]): test pipeline, from ``LoadAnyImageFromFile`` to ``PackDetInputs``.
    """

    def __init__(self, images: Sequence[dict], pipeline: list) -> None:
        self.images = images
        self.pipeline = Compose(pipeline)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        """``index``, ``data`` (the pipeline's output or None) and ``error`` (None or a message)."""
        image = self.images[index]
        try:
            data = self.pipeline(dict(img_path=image['path'], img_id=image['id'], instances=[]))
            error = None if data is not None else 'the pipeline dropped the image'
        except Exception as e:  # an unreadable image is reported, not fatal
            data, error = None, re.sub(r' at 0x[0-9a-fA-F]+', '', f'{type(e).__name__}: {e}')  # no addresses
        return dict(index=index, data=data, error=error)


def build_inference_model(cfg: Config, checkpoint: Optional[str], device: str) -> torch.nn.Module:
    """``cfg.model`` in eval mode on ``device``, with every weight from ``checkpoint`` (a missing one
    raises), or initialised by its ``init_cfg`` when no checkpoint is given. ``cfg`` is left as it was
    (a pipeline stage's record of its config must not change because an earlier stage built a model).
    With a ``ChannelsLastHook`` in ``cfg.custom_hooks`` the model runs in channels-last order, as in training;
    with a ``KeepFreedMemoryHook``, a model on the CPU keeps freed host memory for reuse."""
    from freesolo_mmdet.engine.hooks.channels_last_hook import to_channels_last, wants_channels_last
    from freesolo_mmdet.engine.hooks.keep_freed_memory_hook import keep_freed_memory_on_cpu, wants_freed_memory_kept
    model = MODELS.build(copy.deepcopy(cfg.model))  # mmdet's detectors write into the dict they are built from
    if checkpoint:
        state = load_checkpoint(model, checkpoint, map_location='cpu', strict=False, logger='silent')
        state = state.get('state_dict', state)
        missing = [key for key in model.state_dict() if key not in state and 'num_batches_tracked' not in key]
        if missing:
            raise KeyError(f'{checkpoint} lacks {len(missing)} weights of the model, e.g. {missing[:3]}')
    else:
        model.init_weights()
    model = model.to(device).eval()
    if wants_freed_memory_kept(cfg):
        keep_freed_memory_on_cpu(model)
    return to_channels_last(model) if wants_channels_last(cfg) else model
