"""Self-training pseudo labels (spec section 3): a model's masks on the training images -> COCO json.

Shared by ``tools/gen_pseudo_labels.py`` (offline, between two training runs) and
:class:`SelfTrainingHook` (in one run). The json has the Free Mask format of
:mod:`freesolo_mmdet.free_mask.coco_writer`: RLE masks, tight XYWH ``bbox``, ``area``, ``score``,
``emb`` (the head's embedding), ``iscrowd=0``, ids 1..N in image order, one ``object`` category.
"""
import sys
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData
from mmengine.utils import ProgressBar
from torch.utils.data import DataLoader

from freesolo_mmdet.datasets.image_list import ImagePipelineDataset
from freesolo_mmdet.free_mask.coco_writer import OBJECT_CATEGORIES, masks_to_coco_annotations
from freesolo_mmdet.free_mask.components import split_components
from freesolo_mmdet.free_mask.refine import grabcut_refine_all
from mmdet.structures.mask import mask2bbox

__all__ = [
    'select_pseudo_labels', 'refine_masks', 'split_mask_components', 'flip_averaged_test_step',
    'predict_pseudo_labels', 'collect_pseudo_label_coco', 'find_test_pipeline'
]


def select_pseudo_labels(pred: InstanceData,
                         score_thr: float = 0.3,
                         max_per_img: int = 20,
                         max_width: Optional[float] = 0.95) -> InstanceData:
    """The predictions of one image that become pseudo labels.

    Keeps masks with ``score >= score_thr`` whose box is at most ``max_width`` times as wide as
    the image (``box width <= max_width * W``: spec 3 drops masks *wider* than 0.95; None = off),
    then the ``max_per_img`` highest scoring of those, sorted by score.

    Args:
        pred (InstanceData): ``masks`` (n, H, W) bool tensor and ``scores`` (n, ); other fields
            (``embs``, ...) are selected along.

    Returns:
        InstanceData: the kept predictions.
    """
    keep = pred.scores >= score_thr
    if max_width is not None:
        boxes = mask2bbox(pred.masks)
        keep &= (boxes[:, 2] - boxes[:, 0]).to(keep.device) <= max_width * pred.masks.shape[-1]
    kept = pred[keep]
    return kept[kept.scores.argsort(descending=True, stable=True)[:max_per_img]]


def refine_masks(pred: InstanceData, data: dict, iters: int) -> InstanceData:
    """Each of ``pred.masks`` refined by GrabCut on the image's colours (:func:`grabcut_refine_all`).

    Args:
        pred (InstanceData): ``masks`` (n, h, w) bool at the original image size.
        data (dict): the test pipeline's output for the image: ``inputs`` (3, H, W) uint8 at
            ``img_shape`` and ``data_samples`` with ``ori_shape``; the image is resized back to
            ``ori_shape`` (as Free Mask's refinement does), not read again.
        iters (int): GrabCut iterations.

    Returns:
        InstanceData: ``pred`` with refined masks (same order, scores and other fields).
    """
    if len(pred) == 0:
        return pred
    meta = data['data_samples'].metainfo
    img_h, img_w = meta.get('img_shape', data['inputs'].shape[-2:])[:2]
    ori_h, ori_w = meta['ori_shape'][:2]
    image = data['inputs'][:, :int(img_h), :int(img_w)].permute(1, 2, 0).cpu().numpy()
    image = cv2.resize(np.ascontiguousarray(image), (int(ori_w), int(ori_h)), interpolation=cv2.INTER_LINEAR)
    masks = pred.masks.cpu().numpy()
    pred.masks = torch.from_numpy(grabcut_refine_all(image, masks, iters=iters))
    return pred


def split_mask_components(pred: InstanceData, min_fraction: float) -> InstanceData:
    """Each of ``pred.masks`` replaced by its 8-connected components of at least ``min_fraction`` of its
    largest one (:func:`~freesolo_mmdet.free_mask.components.split_components`), each with the mask's
    score and other fields; the order (by score) is kept.

    Args:
        pred (InstanceData): ``masks`` (n, h, w) bool and the fields that go with them.
        min_fraction (float): in [0, 1].

    Returns:
        InstanceData: m >= 0 instances (an empty mask gives none).
    """
    if len(pred) == 0:
        return pred
    sources, pieces = split_components(pred.masks.cpu().numpy(), min_fraction)
    split = pred[torch.from_numpy(sources).to(pred.masks.device)]
    split.masks = torch.from_numpy(pieces).to(pred.masks.device)
    return split


def flip_averaged_test_step(model: torch.nn.Module, data: dict) -> list:
    """``model.test_step(data)`` with each image's masks averaged over the image and its mirror image
    (:meth:`~freesolo_mmdet.models.FreeSOLOHead.predict_flip_averaged`): the preprocessed batch and its
    left-right flip go through the backbone and neck as one batch of 2B.

    Args:
        model: a single-stage instance segmentor (``extract_feat``, ``add_pred_to_datasample``) whose
            ``mask_head`` has ``predict_flip_averaged`` (:class:`FreeSOLOHead`).
        data (dict): a collated batch, as ``test_step`` takes it.

    Returns:
        list[DetDataSample]: as ``test_step`` returns them.
    """
    head = getattr(model, 'mask_head', None)
    if not hasattr(head, 'predict_flip_averaged'):
        raise TypeError(f'flip averaging needs a FreeSOLOHead; this model\'s mask head is {type(head).__name__}')
    data = model.data_preprocessor(data, False)
    inputs, samples = data['inputs'], data['data_samples']
    feats = model.extract_feat(torch.cat([inputs, inputs.flip(-1)]))
    return model.add_pred_to_datasample(samples, head.predict_flip_averaged(feats, samples))


def predict_pseudo_labels(model: torch.nn.Module,
                          images: Sequence[dict],
                          pipeline: list,
                          score_thr: float = 0.3,
                          max_per_img: int = 20,
                          max_width: Optional[float] = 0.95,
                          batch_size: int = 1,
                          num_workers: int = 0,
                          show_progress: bool = False,
                          refine_iters: Optional[int] = None,
                          split_components: Optional[float] = None,
                          flip: bool = False) -> List[dict]:
    """Predict and select (:func:`select_pseudo_labels`) the pseudo labels of ``images``.

    The model runs in eval mode without gradients; its training mode is restored afterwards.

    Args:
        model: an mmdet detector whose ``test_step`` returns ``DetDataSample`` with
            ``pred_instances`` (``masks``, ``scores``, optionally ``embs``).
        images (Sequence[dict]): ``id``, ``file_name``, ``path`` and optionally ``index`` (the
            image's position in the whole list, for :func:`collect_pseudo_label_coco`;
            default: its position in ``images``).
        refine_iters (int, optional): refine the selected masks with this many GrabCut iterations
            (:func:`refine_masks`). None or 0 (the spec): off.
        split_components (float, optional): then split each selected mask into its connected components
            of at least this share of its largest one (:func:`split_mask_components`); an image may then
            have more than ``max_per_img``. None (the spec): off.
        flip (bool): average each image's masks over the image and its mirror image
            (:func:`flip_averaged_test_step`). False (the spec): off.

    Returns:
        list[dict]: one entry per image: ``index``, ``image`` (COCO image dict), ``annotations``
        (ids from 1 within the image) and ``error`` (None, or why the image was unreadable).
    """
    dataset = ImagePipelineDataset(images, pipeline)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    progress = ProgressBar(len(dataset), file=sys.stdout) if show_progress else None
    was_training = model.training
    model.eval()
    entries = []
    with torch.no_grad():
        for batch in loader:
            loaded = [item for item in batch if item['error'] is None]
            test_step = (lambda data: flip_averaged_test_step(model, data)) if flip else model.test_step
            results = test_step(pseudo_collate([item['data'] for item in loaded])) if loaded else []
            predictions = dict(zip([item['index'] for item in loaded], results))
            for item in batch:
                image = images[item['index']]
                entry = dict(index=image.get('index', item['index']),
                             image=dict(id=image['id'], file_name=image['file_name']), annotations=[],
                             error=item['error'])
                if item['index'] in predictions:
                    pred = select_pseudo_labels(predictions[item['index']].pred_instances, score_thr,
                                                max_per_img, max_width)
                    if refine_iters:
                        pred = refine_masks(pred, item['data'], refine_iters)
                    if split_components is not None:
                        pred = split_mask_components(pred, split_components)
                    entry['image']['height'], entry['image']['width'] = pred.masks.shape[-2:]
                    entry['annotations'] = masks_to_coco_annotations(pred.masks, pred.scores, image['id'],
                                                                     pred.get('embs'))
                entries.append(entry)
                if progress is not None:
                    progress.update()
    model.train(was_training)
    if progress is not None:
        sys.stdout.write('\n')
    return entries


def collect_pseudo_label_coco(entries: Sequence[dict], keep_empty: bool = False) -> Tuple[dict, dict]:
    """One COCO dict from the entries of :func:`predict_pseudo_labels` (any order, e.g. gathered
    from several processes): images in ``index`` order, annotation ids renumbered 1..N.

    Unreadable images, and images without a kept mask unless ``keep_empty``, are left out of
    ``images``; both are listed in the report.

    Returns:
        tuple[dict, dict]: the COCO dict and a report: ``num_images``, ``num_images_with_masks``,
        ``num_annotations``, ``num_skipped``, ``num_no_mask``, ``skipped`` (file_name and reason)
        and ``no_mask`` (file_names).

    Raises:
        ValueError: an image id occurs twice.
    """
    entries = sorted(entries, key=lambda entry: entry['index'])
    image_ids = [entry['image']['id'] for entry in entries]
    if len(set(image_ids)) != len(image_ids):
        raise ValueError('pseudo labels: an image id occurs twice')
    images, annotations, skipped, no_mask = [], [], [], []
    for entry in entries:
        if entry['error'] is not None:
            skipped.append(dict(file_name=entry['image']['file_name'], reason=entry['error']))
            continue
        if not entry['annotations']:
            no_mask.append(entry['image']['file_name'])
            if not keep_empty:
                continue
        images.append(entry['image'])
        for ann in entry['annotations']:
            annotations.append(dict(ann, id=len(annotations) + 1))
    report = dict(num_images=len(entries), num_images_with_masks=len(entries) - len(skipped) - len(no_mask),
                  num_annotations=len(annotations), num_skipped=len(skipped), num_no_mask=len(no_mask),
                  skipped=skipped, no_mask=no_mask)
    return dict(images=images, annotations=annotations, categories=OBJECT_CATEGORIES), report


def find_test_pipeline(cfg: Config) -> list:
    """The test pipeline of a config: ``test_dataloader``'s, else ``val_dataloader``'s, else
    ``test_pipeline``. Dataset wrappers (``dataset=dict(dataset=...)``) are looked through."""
    for key in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset')
        while isinstance(dataset, dict):
            if 'pipeline' in dataset:
                return dataset['pipeline']
            dataset = dataset.get('dataset')
    if cfg.get('test_pipeline'):
        return cfg['test_pipeline']
    raise KeyError('the config has no test pipeline (test_dataloader.dataset.pipeline, '
                   'val_dataloader.dataset.pipeline or test_pipeline)')
