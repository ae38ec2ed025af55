from .coarse_mask_annotations import LoadCoarseMaskAnnotations, PackCoarseMaskInputs

__all__ = ['LoadCoarseMaskAnnotations', 'PackCoarseMaskInputs']
