"""Class-agnostic COCO mask and box AP/AR (pycocotools ``useCats = 0``)."""
import contextlib
import io
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

__all__ = ['ClassAgnosticCocoMetric', 'class_agnostic_cocoeval', 'rle_to_xyxy']


def rle_to_xyxy(rles: Sequence[dict]) -> np.ndarray:
    """Tight boxes (n, 4) in x1y1x2y2 of RLE masks; an empty mask gives 0s."""
    if len(rles) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    boxes = mask_util.toBbox(list(rles)).astype(np.float32)  # xywh
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def class_agnostic_cocoeval(coco_gt: COCO,
                            predictions: List[dict],
                            iou_type: str,
                            img_ids: Optional[Sequence[int]] = None,
                            max_dets: Sequence[int] = (1, 10, 100)) -> np.ndarray:
    """The 12 pycocotools stats of ``predictions`` (COCO result dicts with
    ``image_id``, ``score`` and ``segmentation`` or ``bbox``) against
    ``coco_gt``, with ``params.useCats = 0``. Category ids of the predictions
    are replaced by the first ground-truth category; they don't count."""
    cat_id = (coco_gt.getCatIds() or [1])[0]
    keep = ('image_id', 'score', 'segmentation' if iou_type == 'segm' else 'bbox')
    # segm: area from the mask, not from the box; copies leave the input as it was
    predictions = [{**{k: p[k] for k in keep}, 'category_id': cat_id} for p in predictions]
    if predictions:
        coco_dt = coco_gt.loadRes(predictions)
    else:  # loadRes fails on []; no detections at all scores AP 0
        coco_dt = COCO()
        coco_dt.dataset['images'] = coco_gt.dataset['images']
        coco_dt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    coco_eval.params.useCats = 0
    coco_eval.params.imgIds = list(img_ids) if img_ids is not None else coco_gt.getImgIds()
    coco_eval.params.maxDets = list(max_dets)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@METRICS.register_module()
class ClassAgnosticCocoMetric(CocoMetric):
    """COCO AP/AR of ``segm`` and ``bbox`` with every category as one.

    Predicted labels and ground-truth categories are ignored: pycocotools
    matches any detection with any ground truth (``params.useCats = 0``),
    which equals mapping every category to one. Results are reported unrounded
    under ``agnostic/{segm,bbox}_{AP,AP50,AP75,AP_S,AP_M,AP_L,AR<n>...,
    AR_S,AR_M,AR_L}``, ``<n>`` in ``proposal_nums`` (AP and AR_S/M/L at the
    last one). Stats without ground truth (e.g. no small objects) are -1.

    Boxes: with ``bbox_from_masks=True`` (default) every prediction that has
    a mask is scored in ``bbox`` with the tight box of its mask, as in the
    FreeSOLO/CutLER tables; this also makes ``bbox`` meaningful for SOLOv2,
    which predicts all-zero boxes. Set it to False to score a box head's own
    boxes. Without ``ann_file`` the ground truth is converted from the data
    samples as in :class:`CocoMetric`, but with the mask area (the COCO
    convention) instead of the box area, so AP_S/M/L match a json run.

    Args:
        ann_file (str, optional): COCO json of the ground truth.
        metric (str | Sequence[str]): 'segm' and/or 'bbox'.
        bbox_from_masks (bool): Score boxes derived from predicted masks.
        proposal_nums (Sequence[int]): The three max detections per image
            (pycocotools ``maxDets``) of AR1/AR10/AR100.
        format_only (bool): Only dump the predictions as json.
        outfile_prefix (str, optional): Prefix of the dumped json files.
        **kwargs: ``backend_args``, ``collect_device``, ``prefix`` and the
            other arguments of :class:`CocoMetric`.
    """
    default_prefix: Optional[str] = 'agnostic'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, Sequence[str]] = ('segm', 'bbox'),
                 bbox_from_masks: bool = True,
                 proposal_nums: Sequence[int] = (1, 10, 100),
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 **kwargs) -> None:
        metrics = [metric] if isinstance(metric, str) else list(metric)
        unknown = set(metrics) - {'segm', 'bbox'}
        if unknown or not metrics:
            raise KeyError(f"metric must be 'segm' and/or 'bbox', got {metric}")
        if len(proposal_nums) != 3:
            raise ValueError('proposal_nums must hold 3 numbers (pycocotools '
                             f'summarize), got {proposal_nums}')
        super().__init__(
            ann_file=ann_file,
            metric=metrics,
            proposal_nums=proposal_nums,
            format_only=format_only,
            outfile_prefix=outfile_prefix,
            **kwargs)
        self._gt_from_file = ann_file is not None
        self.bbox_from_masks = bbox_from_masks
        n1, n2, n3 = self.proposal_nums
        self.stat_names = ('AP', 'AP50', 'AP75', 'AP_S', 'AP_M', 'AP_L',
                           f'AR{n1}', f'AR{n2}', f'AR{n3}', 'AR_S', 'AR_M',
                           'AR_L')

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store RLE predictions as :class:`CocoMetric` does, with all labels
        set to 0 and, if asked, boxes replaced by the boxes of the masks."""
        super().process(data_batch, data_samples)
        for _, pred in self.results[len(self.results) - len(data_samples):]:
            pred['labels'] = np.zeros_like(pred['labels'])
            if self.bbox_from_masks and 'masks' in pred:
                pred['bboxes'] = rle_to_xyxy(pred['masks'])

    def _gt_from_samples(self, gts: Sequence[dict], prefix: str) -> COCO:
        """COCO api of ground truth converted from data samples."""
        if not (self.dataset_meta and 'classes' in self.dataset_meta):
            raise ValueError('Without ann_file, dataset_meta["classes"] must '
                             'be set (the Evaluator sets it from the dataset)')
        coco_gt = COCO(self.gt_to_coco_json(gts, outfile_prefix=prefix))
        for ann in coco_gt.dataset.get('annotations', []):
            if 'segmentation' in ann:
                ann['area'] = float(mask_util.area(coco_gt.annToRLE(ann)))
        return coco_gt

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Evaluate the processed ``(gt, pred)`` pairs; returns the stats
        named in the class docstring for each metric."""
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        tmp_dir = None
        if self.outfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            outfile_prefix = osp.join(tmp_dir.name, 'results')
        else:
            outfile_prefix = self.outfile_prefix
        try:
            if not self._gt_from_file:  # re-converted at every evaluation
                self._coco_api = self._gt_from_samples(gts, outfile_prefix)
            # labels are all 0; any GT category id will do, but it must be
            # one: useCats=0 still drops detections outside params.catIds
            self.cat_ids = self._coco_api.get_cat_ids()[:1] or [1]
            self.img_ids = self._coco_api.get_img_ids()
            missing = set(self.img_ids) - {gt['img_id'] for gt in gts}
            if missing:
                logger.warning(f'{len(missing)} of {len(self.img_ids)} '
                               'ground-truth images have no predictions; '
                               'they count as misses')
            result_files = self.results2json(preds, outfile_prefix)
            if self.format_only:
                logger.info(f'results are saved in {result_files}')
                return OrderedDict()
            eval_results = OrderedDict()
            for iou_type in self.metrics:
                if iou_type not in result_files:
                    raise KeyError(f"'{iou_type}' needs predicted masks")
                stats = self._evaluate(load(result_files[iou_type]), iou_type)
                for name, value in zip(self.stat_names, stats):
                    eval_results[f'{iou_type}_{name}'] = float(value)
            self._log_table(eval_results, logger)
            return eval_results
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()

    def _evaluate(self, predictions: List[dict], iou_type: str) -> np.ndarray:
        """The 12 pycocotools stats of one iou type, ``useCats = 0``."""
        return class_agnostic_cocoeval(self._coco_api, predictions, iou_type,
                                       self.img_ids, self.proposal_nums)

    def _log_table(self, eval_results: Dict[str, float],
                   logger: MMLogger) -> None:
        """Log one row per iou type, one column per stat, in percent ('-':
        no ground truth for that stat)."""
        rows = [['class-agnostic', *self.stat_names]]
        for iou_type in self.metrics:
            values = [eval_results[f'{iou_type}_{n}'] for n in self.stat_names]
            rows.append([iou_type] +
                        [f'{100 * v:.1f}' if v >= 0 else '-' for v in values])
        logger.info('\n' + AsciiTable(rows).table)
