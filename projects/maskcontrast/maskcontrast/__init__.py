"""MaskContrast (Van Gansbeke et al., ICCV 2021) on FreeSOLO mask proposals.

Importing this package (``custom_imports = dict(imports=['projects.maskcontrast.maskcontrast'])``)
registers ``MaskContrast``, ``MaskContrastHead`` and ``MaskContrastLoss`` in mmdet's ``MODELS``
and ``MaskProposalDataset`` / ``SemanticSegDataset`` in its ``DATASETS``.
"""
import mmdet.models  # noqa: F401  (registers mmdet's backbones, necks and losses)

from .datasets import MaskProposalDataset, SemanticSegDataset, collate_two_views, read_rgb
from .evaluation import (extract_features, feature_extractor, kmeans_miou, kmeans_segmentation, linear_probe_miou,
                         upsampled_pixels)
from .head import MaskContrastHead
from .kmeans import kmeans, kmeans_assign
from .loss import MaskContrastLoss, labels_to_masks, mask_contrastive_loss, mask_prototypes
from .memory_bank import PrototypeMemoryBank
from .metrics import confusion_matrix, hungarian_match, hungarian_miou, iou_from_confusion
from .model import MaskContrast, resize_labels
from .proposals import MaskProposals, decode_segmentation, load_coco_json
from .transforms import TwoViewTransform, color_jitter, random_resized_crop_box
from .visualization import class_palette, colorize, segmentation_panel

__all__ = [
    'MaskContrast', 'MaskContrastHead', 'MaskContrastLoss', 'PrototypeMemoryBank', 'mask_contrastive_loss',
    'mask_prototypes', 'labels_to_masks', 'resize_labels', 'MaskProposals', 'decode_segmentation',
    'load_coco_json', 'MaskProposalDataset', 'SemanticSegDataset', 'collate_two_views', 'read_rgb',
    'TwoViewTransform', 'color_jitter', 'random_resized_crop_box', 'kmeans', 'kmeans_assign',
    'confusion_matrix', 'hungarian_match', 'hungarian_miou', 'iou_from_confusion', 'feature_extractor',
    'extract_features', 'upsampled_pixels', 'kmeans_miou', 'kmeans_segmentation', 'linear_probe_miou',
    'class_palette', 'colorize', 'segmentation_panel'
]
