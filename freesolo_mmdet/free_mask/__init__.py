from .coco_writer import masks_to_coco_annotations, merge_coco_parts
from .generator import FreeMaskGenerator

__all__ = ['FreeMaskGenerator', 'masks_to_coco_annotations', 'merge_coco_parts']
