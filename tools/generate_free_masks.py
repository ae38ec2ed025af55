"""Free Mask (FreeSOLO stage 1): a folder of images (or a COCO image list) -> one COCO json of coarse masks.

    python tools/generate_free_masks.py CONFIG --images DIR --out OUT.json
    python tools/generate_free_masks.py CONFIG --ann-file train.json --img-prefix DIR --out OUT.json
    bash tools/dist_generate_free_masks.sh 8 CONFIG --images DIR --out OUT.json

The images are cut into chunks of ``--chunk-size``; each finished chunk is written atomically to
``OUT.parts/chunk{k}.json``. A killed run continues where it stopped when rerun with the same
arguments (any number of processes), and the merged ``OUT`` is byte-identical to an uninterrupted
run's: batches never straddle chunks and annotation ids are assigned at merge time, in image order.
Unreadable images and images without a surviving mask are left out of ``OUT`` and listed in
``OUT.report.json`` (``OUT`` without its ``.json`` suffix).
"""
import argparse
import hashlib
import json
import os.path as osp
import shutil
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.dist import barrier, broadcast_object_list, get_dist_info, init_dist
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import set_random_seed
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

from freesolo_mmdet.datasets.image_list import (add_image_source_arguments, check_image_source_arguments,
                                               ImagePipelineDataset, build_inference_model, list_images)
from freesolo_mmdet.free_mask.coco_writer import (atomic_open, dump_json_atomic, masks_to_coco_annotations,
                                                   merge_coco_parts)
from freesolo_mmdet.free_mask.generator import FreeMaskGenerator  # noqa: F401 (registers it)

DEFAULTS = dict(batch_size=1, num_workers=2, chunk_size=500)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate FreeSOLO Free Masks as a COCO json.')
    parser.add_argument('config', help='Free Mask config, e.g. configs/free_mask/free_mask_r50_densecl.py')
    add_image_source_arguments(parser)
    parser.add_argument('--out', required=True, help='output COCO json')
    parser.add_argument('--checkpoint', help='weights to load instead of the config\'s init_cfg')
    parser.add_argument('--batch-size', type=int, help='images per forward pass')
    parser.add_argument('--num-workers', type=int, help='data loading processes')
    parser.add_argument('--chunk-size', type=int, help='images per partial result file')
    parser.add_argument('--max-chunks', type=int,
                        help='stop after this many new chunks per process (e.g. for time-limited jobs); '
                        'rerun to continue')
    parser.add_argument('--keep-parts', action='store_true', help='keep OUT.parts after merging')
    parser.add_argument('--device', help='default: cuda if available, else cpu')
    parser.add_argument('--seed', type=int, default=0, help='seed for any randomly initialised weights')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.min_score=0.5')
    args = parser.parse_args(argv)
    check_image_source_arguments(parser, args)
    return args


def run_digest(cfg: Config, images: list, opts: dict, checkpoint: str) -> str:
    """Hash of everything that decides the result of a chunk: resuming needs the same."""
    settings = dict(model=cfg.model, pipeline=cfg.test_pipeline, images=images, checkpoint=checkpoint,
                    chunk_size=opts['chunk_size'], batch_size=opts['batch_size'])
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def chunk_path(parts_dir: str, k: int) -> str:
    return osp.join(parts_dir, f'chunk{k:06d}.json')


def check_parts(parts_dir: str, digest: str, num_chunks: int):
    """Finished chunk indices, or an error message if the parts come from other settings."""
    meta_path = osp.join(parts_dir, 'meta.json')
    if osp.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f)['digest'] != digest:
                return (f'{parts_dir} holds partial results of a run with other settings (config, images, '
                        'checkpoint, chunk or batch size). Delete it or rerun with the same arguments.')
    else:
        dump_json_atomic(dict(digest=digest), meta_path)
    return [k for k in range(num_chunks) if osp.exists(chunk_path(parts_dir, k))]


def process_chunks(model, dataset: ImagePipelineDataset, chunks: list, todo: list, opts: dict, parts_dir: str,
                   show_progress: bool) -> None:
    """Runs the model over the chunks in ``todo`` and writes one part file per chunk."""
    batches, batch_chunks = [], []
    for k in todo:
        indices = chunks[k]
        for start in range(0, len(indices), opts['batch_size']):
            batches.append(list(indices[start:start + opts['batch_size']]))
            batch_chunks.append(k)
    if not batches:
        return
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=opts['num_workers'], collate_fn=list)
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
            dump_json_atomic(part, chunk_path(parts_dir, batch_chunks[b]))
            part = dict(images=[], annotations=[], skipped=[], no_mask=[])
    if progress is not None:
        sys.stdout.write('\n')


def merge(parts_dir: str, num_chunks: int, num_images: int, out: str) -> dict:
    """Writes ``out`` and its report from all part files; returns the report."""
    paths = [chunk_path(parts_dir, k) for k in range(num_chunks)]
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


def report_path(out: str) -> str:
    return osp.splitext(out)[0] + '.report.json'


def init_distributed() -> None:
    """torchrun environment -> process group (gloo: CPU or GPU, only objects are exchanged)."""
    if torch.cuda.is_available():
        init_dist('pytorch', backend='gloo')
    else:  # mmengine's init_dist calls torch.cuda.set_device, which CPU-only torch lacks
        torch.distributed.init_process_group(backend='gloo')


def main(argv=None) -> None:
    args = parse_args(argv)
    MMLogger.get_instance('generate_free_masks', log_level='WARNING')  # no per-weight init log
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'no such config: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if args.launcher == 'pytorch':
        init_distributed()
    rank, world_size = get_dist_info()
    opts = {**DEFAULTS, **cfg.get('free_mask_cfg', {})}
    opts.update({key: getattr(args, key) for key in DEFAULTS if getattr(args, key) is not None})

    images = list_images(args.images, args.ann_file, args.img_prefix)
    chunks = [range(start, min(start + opts['chunk_size'], len(images)))
              for start in range(0, len(images), opts['chunk_size'])]
    parts_dir = args.out + '.parts'
    state = [None]
    if rank == 0:
        state = [check_parts(parts_dir, run_digest(cfg, images, opts, args.checkpoint), len(chunks))]
    broadcast_object_list(state)
    if isinstance(state[0], str):
        raise SystemExit(state[0])
    finished = set(state[0])
    todo = [k for k in range(len(chunks)) if k not in finished][rank::world_size][:args.max_chunks]

    set_random_seed(args.seed)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_inference_model(cfg, args.checkpoint, device)
    process_chunks(model, ImagePipelineDataset(images, cfg.test_pipeline), chunks, todo, opts, parts_dir,
                   show_progress=rank == 0)
    barrier()
    if rank != 0:
        return
    done = sum(osp.exists(chunk_path(parts_dir, k)) for k in range(len(chunks)))
    if done < len(chunks):
        print(f'{done} of {len(chunks)} chunks done in {parts_dir}; rerun the same command to continue.')
        return
    report = merge(parts_dir, len(chunks), len(images), args.out)
    if not args.keep_parts:
        shutil.rmtree(parts_dir)
    print(f'{args.out}: {report["num_annotations"]} masks on {report["num_images_with_masks"]} of '
          f'{report["num_images"]} images; {report["num_skipped"]} unreadable, {report["num_no_mask"]} '
          f'without a mask (see {report_path(args.out)})')


if __name__ == '__main__':
    main()
