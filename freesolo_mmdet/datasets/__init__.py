from .coarse_mask_dataset import CoarseMaskCocoDataset
from .transforms import LoadCoarseMaskAnnotations, PackCoarseMaskInputs

__all__ = ['CoarseMaskCocoDataset', 'LoadCoarseMaskAnnotations', 'PackCoarseMaskInputs']
