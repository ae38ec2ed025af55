from .color_similarity import FreeSOLODataPreprocessor
from .two_view_augment import TwoViewAugment

__all__ = ['FreeSOLODataPreprocessor', 'TwoViewAugment']
