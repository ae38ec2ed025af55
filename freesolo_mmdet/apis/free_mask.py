"""Free Mask (FreeSOLO stage 1) over a list of images -> one COCO json of coarse masks.

The images are cut into chunks; each finished chunk is written atomically to ``OUT.parts/chunk{k}.json``.
A killed run continues where it stopped when called again with the same settings (any number of
processes), and the merged ``OUT`` is byte-identical to an uninterrupted run's: batches never straddle
chunks and annotation ids are assigned at merge time, in image order. Unreadable images and images
without a surviving mask are left out of ``OUT`` and listed in ``OUT.report.json``.
"""
import hashlib
import json
import os.path as osp
import shutil
import sys
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.dist import barrier, broadcast_object_list, get_dist_info
from mmengine.registry import init_default_scope
from mmengine.runner import set_random_seed
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

from freesolo_mmdet.datasets.image_list import ImagePipelineDataset, build_inference_model
from freesolo_mmdet.free_mask.coco_writer import atomic_open, dump_json_atomic, masks_to_coco_annotations, \
    merge_coco_parts
from .config import check_keys, check_writable

__all__ = ['FREE_MASK_DEFAULTS', 'free_mask_options', 'generate_free_masks', 'report_path']

#: the settings of ``free_mask_cfg`` in a Free Mask config (loader and resume granularity)
FREE_MASK_DEFAULTS = dict(batch_size=1, num_workers=2, chunk_size=500)


def report_path(out: str) -> str:
    """``OUT.report.json`` of an output ``OUT.json``."""
    return osp.splitext(out)[0] + '.report.json'


def free_mask_options(cfg: Config, **overrides) -> dict:
    """``FREE_MASK_DEFAULTS`` updated by the config's ``free_mask_cfg`` and the non-None ``overrides``.

    Raises:
        InputError: ``free_mask_cfg`` has a key that nothing reads (a typo).
    """
    options = dict(cfg.get('free_mask_cfg') or {})
    check_keys(options, FREE_MASK_DEFAULTS, 'free_mask_cfg')
    options = {**FREE_MASK_DEFAULTS, **options}
    options.update({key: value for key, value in overrides.items() if value is not None})
    return options


def _digest(cfg: Config, images: Sequence[dict], options: dict, checkpoint: Optional[str]) -> str:
    """Hash of everything that decides the result of a chunk: resuming needs the same."""
    settings = dict(model=cfg.model, pipeline=cfg.test_pipeline, images=images, checkpoint=checkpoint,
                    chunk_size=options['chunk_size'], batch_size=options['batch_size'])
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _chunk_path(parts_dir: str, k: int) -> str:
    return osp.join(parts_dir, f'chunk{k:06d}.json')


def _finished_chunks(parts_dir: str, digest: str, num_chunks: int):
    """Finished chunk indices, or an error message if the parts come from other settings.

    Parts of other settings without a single finished chunk (a start that failed) are replaced.
    """
    meta_path = osp.join(parts_dir, 'meta.json')
    finished = [k for k in range(num_chunks) if osp.exists(_chunk_path(parts_dir, k))]
    if osp.exists(meta_path):
        with open(meta_path) as f:
            same = json.load(f)['digest'] == digest
        if not same and finished:
            return (f'{parts_dir} holds partial results of a run with other settings (config, images, '
                    'checkpoint, chunk or batch size). Delete it or rerun with the same arguments.')
        if not same:
            shutil.rmtree(parts_dir)
    dump_json_atomic(dict(digest=digest), meta_path)
    return finished


def _process_chunks(model, dataset: ImagePipelineDataset, chunks: list, todo: list, options: dict,
                    parts_dir: str, show_progress: bool) -> None:
    """Runs the model over the chunks in ``todo`` and writes one part file per chunk."""
    batches, batch_chunks = [], []
    for k in todo:
        indices = chunks[k]
        for start in range(0, len(indices), options['batch_size']):
            batches.append(list(indices[start:start + options['batch_size']]))
            batch_chunks.append(k)
    if not batches:
        return
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=options['num_workers'], collate_fn=list)
    progress = ProgressBar(sum(len(chunks[k]) for k in todo), file=sys.stdout) if show_progress else None
    part = dict(images=[], annotations=[], skipped=[], no_mask=[])
    for b, batch in enumerate(loader):
        loaded = [item for item in batch if item['error'] is None]
        results = model.test_step(pseudo_collate([item['data'] for item in loaded])) if loaded else []
        for item in batch:
            if item['error'] is not None:
                part['skipped'].append(dict(file_name=dataset.images[item['index']]['file_name'],
                                            reason=item['error']))
        for item, result in zip(loaded, results):
            image = dataset.images[item['index']]
            annotations = masks_to_coco_annotations(result.masks, result.scores, image['id'], result.embs)
            if annotations:
                height, width = result.masks.shape[-2:]
                part['images'].append(dict(id=image['id'], file_name=image['file_name'], height=height,
                                           width=width))
                part['annotations'].extend(annotations)
            else:
                part['no_mask'].append(image['file_name'])
        if progress is not None:
            for _ in batch:
                progress.update()
        if b + 1 == len(batches) or batch_chunks[b + 1] != batch_chunks[b]:
            dump_json_atomic(part, _chunk_path(parts_dir, batch_chunks[b]))
            part = dict(images=[], annotations=[], skipped=[], no_mask=[])
    if progress is not None:
        sys.stdout.write('\n')


def _merge(parts_dir: str, num_chunks: int, num_images: int, out: str) -> dict:
    """Writes ``out`` and its report from all part files; returns the report."""
    paths = [_chunk_path(parts_dir, k) for k in range(num_chunks)]
    counts = merge_coco_parts(paths, out)
    skipped, no_mask = [], []
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        skipped += part['skipped']
        no_mask += part['no_mask']
    report = dict(out=osp.basename(out), num_images=num_images, num_images_with_masks=counts['num_images'],
                  num_annotations=counts['num_annotations'], num_skipped=len(skipped),
                  num_no_mask=len(no_mask), skipped=skipped, no_mask=no_mask)
    with atomic_open(report_path(out)) as f:
        json.dump(report, f, indent=1)
    return report


def generate_free_masks(cfg: Config,
                        images: List[dict],
                        out: str,
                        checkpoint: Optional[str] = None,
                        device: Optional[str] = None,
                        seed: int = 0,
                        max_chunks: Optional[int] = None,
                        keep_parts: bool = False,
                        show_progress: bool = True,
                        **options) -> Optional[dict]:
    """Free Masks of ``images`` written to ``out`` (COCO json) and ``OUT.report.json``.

    In a process group (torchrun) every rank takes every ``world_size``-th unfinished chunk and rank 0
    merges; the output does not depend on the number of processes.

    Args:
        cfg (Config): a Free Mask config (``model``, ``test_pipeline``, optional ``free_mask_cfg``).
        images (list[dict]): ``id``, ``file_name`` and ``path`` of each image
            (:func:`~freesolo_mmdet.datasets.image_list.list_images`).
        out (str): the COCO json to write; checked for writability before any work.
        checkpoint (str, optional): weights to load instead of the config's ``init_cfg``.
        device (str, optional): default cuda (this rank's) if available, else cpu.
        seed (int): seed for randomly initialised weights.
        max_chunks (int, optional): stop after this many new chunks per process; call again to continue.
        keep_parts (bool): keep ``OUT.parts`` after merging.
        **options: ``batch_size``, ``num_workers``, ``chunk_size`` over the config's ``free_mask_cfg``.

    Returns:
        dict or None: the report (``num_images``, ``num_annotations``, ``skipped``, ...), on every rank,
        once every chunk is done and ``out`` is written; None while chunks are left.
    """
    out = check_writable(out)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    rank, world_size = get_dist_info()
    options = free_mask_options(cfg, **options)
    set_random_seed(seed)
    if device is None:
        device = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    model = build_inference_model(cfg, checkpoint, device)  # before OUT.parts: a bad config leaves nothing
    chunks = [range(start, min(start + options['chunk_size'], len(images)))
              for start in range(0, len(images), options['chunk_size'])]
    parts_dir = out + '.parts'
    state = [None]
    if rank == 0:
        state = [_finished_chunks(parts_dir, _digest(cfg, images, options, checkpoint), len(chunks))]
    broadcast_object_list(state)
    if isinstance(state[0], str):
        raise SystemExit(state[0])
    finished = set(state[0])
    todo = [k for k in range(len(chunks)) if k not in finished][rank::world_size][:max_chunks]
    _process_chunks(model, ImagePipelineDataset(images, cfg.test_pipeline), chunks, todo, options, parts_dir,
                    show_progress=show_progress and rank == 0)
    barrier()
    report = [None]
    if rank == 0:
        done = sum(osp.exists(_chunk_path(parts_dir, k)) for k in range(len(chunks)))
        if done < len(chunks):
            print(f'{done} of {len(chunks)} chunks done in {parts_dir}; rerun the same command to continue.')
        else:
            report = [_merge(parts_dir, len(chunks), len(images), out)]
            if not keep_parts:
                shutil.rmtree(parts_dir)
    broadcast_object_list(report)  # every rank returns once rank 0 has written OUT
    return report[0]
