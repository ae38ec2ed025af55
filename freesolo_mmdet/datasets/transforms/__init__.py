from .coarse_mask_annotations import LoadCoarseMaskAnnotations, PackCoarseMaskInputs
from .load_any_image import LoadAnyImageFromFile, read_image

__all__ = ['LoadAnyImageFromFile', 'LoadCoarseMaskAnnotations', 'PackCoarseMaskInputs', 'read_image']
