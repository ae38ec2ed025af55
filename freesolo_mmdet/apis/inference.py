"""A trained FreeSOLO model's masks on a list of images -> COCO json: the self-training pseudo labels
(spec section 3) and the final predictions are the same function with other filters."""
import json
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config
from mmengine.dist import broadcast_object_list, gather_object, get_dist_info
from mmengine.registry import init_default_scope

from freesolo_mmdet.datasets.image_list import build_inference_model
from freesolo_mmdet.engine.pseudo_labels import collect_pseudo_label_coco, find_test_pipeline, \
    predict_pseudo_labels
from freesolo_mmdet.free_mask.coco_writer import atomic_open, dump_json_atomic
from .config import InputError, check_writable
from .free_mask import report_path

__all__ = ['predict_masks']


def predict_masks(cfg: Config,
                  checkpoint: str,
                  images: List[dict],
                  out: str,
                  score_thr: float = 0.3,
                  max_per_img: int = 20,
                  max_width: Optional[float] = 0.95,
                  keep_empty: bool = False,
                  batch_size: int = 1,
                  num_workers: int = 2,
                  device: Optional[str] = None,
                  show_progress: bool = True,
                  refine_iters: Optional[int] = None,
                  split_components: Optional[float] = None,
                  flip: bool = False) -> dict:
    """The model's masks on ``images``, filtered (score, width, count), written to ``out`` and
    ``OUT.report.json`` in the Free Mask format (RLE, tight XYWH box, area, score, emb).

    The defaults are the pseudo-label filters of spec section 3; ``score_thr=0.1, max_per_img=100,
    max_width=None, keep_empty=True`` gives the plain predictions on every image. In a process group each
    rank predicts every ``world_size``-th image and rank 0 writes.

    Args:
        cfg (Config): the training config of the model (its test pipeline and model).
        checkpoint (str): trained weights.
        images (list[dict]): ``id``, ``file_name`` and ``path`` of each image.
        out (str): the COCO json to write; checked for writability before any work.
        refine_iters (int, optional): GrabCut iterations refining each kept mask on the image's colours
            (:func:`~freesolo_mmdet.engine.pseudo_labels.refine_masks`); None or 0 (the spec): off.
        split_components (float, optional): then each kept mask becomes its connected components of at
            least this share of its largest one
            (:func:`~freesolo_mmdet.engine.pseudo_labels.split_mask_components`); None (the spec): off.
        flip (bool): average each image's masks over the image and its mirror image
            (:func:`~freesolo_mmdet.engine.pseudo_labels.flip_averaged_test_step`); False (the spec): off.

    Returns:
        dict: the report (``num_images``, ``num_images_with_masks``, ``num_annotations``, ``skipped``,
        ``no_mask``, ...), on every rank.
    """
    if not osp.isfile(checkpoint):
        raise InputError(f'no such checkpoint: {checkpoint}')
    out = check_writable(out)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    rank, world_size = get_dist_info()
    if device is None:
        device = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    model = build_inference_model(cfg, checkpoint, device)
    shard = [dict(image, index=i) for i, image in enumerate(images)][rank::world_size]
    entries = predict_pseudo_labels(model, shard, find_test_pipeline(cfg), score_thr=score_thr,
                                    max_per_img=max_per_img, max_width=max_width, batch_size=batch_size,
                                    num_workers=num_workers, show_progress=show_progress and rank == 0,
                                    refine_iters=refine_iters, split_components=split_components, flip=flip)
    parts = gather_object(entries, dst=0) if world_size > 1 else [entries]
    report = [None]
    if rank == 0:
        coco, summary = collect_pseudo_label_coco([entry for part in parts for entry in part],
                                                  keep_empty=keep_empty)
        with atomic_open(report_path(out)) as f:
            json.dump(dict(out=osp.basename(out), **summary), f, indent=1)
        dump_json_atomic(coco, out)
        report = [summary]
    broadcast_object_list(report)  # every rank returns once rank 0 has written
    return report[0]
