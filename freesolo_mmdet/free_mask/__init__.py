from .coco_writer import masks_to_coco_annotations, merge_coco_parts
from .generator import FreeMaskGenerator
from .maskcut import MaskCutGenerator

__all__ = ['FreeMaskGenerator', 'MaskCutGenerator', 'masks_to_coco_annotations', 'merge_coco_parts']
