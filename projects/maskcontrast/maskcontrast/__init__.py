"""MaskContrast (Van Gansbeke et al., ICCV 2021) on FreeSOLO mask proposals, on mmengine.

Importing this package (``custom_imports = dict(imports=['projects.maskcontrast.maskcontrast'])``)
registers in mmdet's registries: the model ``MaskContrast``, ``MaskContrastHead`` and
``MaskContrastLoss`` (``MODELS``); ``MaskProposalDataset``, ``SemanticSegDataset`` and
``SplitConcatDataset`` (``DATASETS``); the metrics ``KMeansMIoU`` and ``LinearProbeMIoU``
(``METRICS``); ``KMeansVisualizationHook`` and ``LegacyCheckpointHook`` (``HOOKS``); and
``SemSegLocalVisualizer`` (``VISUALIZERS``).
"""
import mmdet.models  # noqa: F401  (registers mmdet's backbones, necks and losses)

from .datasets import MaskProposalDataset, SemanticSegDataset, SplitConcatDataset, read_rgb
from .head import MaskContrastHead
from .kmeans import kmeans, kmeans_assign
from .kmeans_metric import KMeansMIoU
from .legacy_checkpoint import LegacyCheckpointHook, convert_legacy_checkpoint, is_legacy_checkpoint
from .loss import MaskContrastLoss, labels_to_masks, mask_contrastive_loss, mask_prototypes
from .memory_bank import PrototypeMemoryBank, gather_rows
from .metrics import confusion_matrix, hungarian_match, hungarian_miou, iou_from_confusion
from .model import FEATURE_SOURCES, MaskContrast, resize_labels
from .pixel_sampler import PixelReservoir, PixelSampleMetric, sample_bilinear
from .probe_metric import LinearProbeMIoU, train_linear_probe
from .proposal_check import check_image_file, check_proposals, check_segmentation, rle_counts, summarize_bad_entries
from .proposals import MaskProposals, decode_segmentation, load_coco_json
from .transforms import TwoViewTransform, color_jitter, random_resized_crop_box
from .vis_hook import KMeansVisualizationHook, kmeans_segmentation
from .visualization import SemSegLocalVisualizer, class_palette

__all__ = [
    'MaskContrast', 'FEATURE_SOURCES', 'MaskContrastHead', 'MaskContrastLoss', 'PrototypeMemoryBank', 'gather_rows',
    'mask_contrastive_loss', 'mask_prototypes', 'labels_to_masks', 'resize_labels', 'MaskProposals',
    'decode_segmentation', 'load_coco_json', 'rle_counts', 'check_segmentation', 'check_image_file',
    'check_proposals', 'summarize_bad_entries', 'MaskProposalDataset', 'SemanticSegDataset', 'SplitConcatDataset',
    'read_rgb', 'TwoViewTransform', 'color_jitter', 'random_resized_crop_box', 'kmeans', 'kmeans_assign',
    'confusion_matrix', 'hungarian_match', 'hungarian_miou', 'iou_from_confusion', 'PixelReservoir',
    'sample_bilinear', 'PixelSampleMetric', 'KMeansMIoU', 'LinearProbeMIoU', 'train_linear_probe',
    'KMeansVisualizationHook', 'kmeans_segmentation', 'SemSegLocalVisualizer', 'class_palette',
    'LegacyCheckpointHook', 'is_legacy_checkpoint', 'convert_legacy_checkpoint'
]
