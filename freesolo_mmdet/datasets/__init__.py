from .coarse_mask_dataset import CoarseMaskCocoDataset
from .heldout_scenes import make_heldout_dataset, render_heldout_scene
from .transforms import LoadCoarseMaskAnnotations, PackCoarseMaskInputs

__all__ = [
    'CoarseMaskCocoDataset', 'LoadCoarseMaskAnnotations', 'PackCoarseMaskInputs', 'make_heldout_dataset',
    'render_heldout_scene'
]
