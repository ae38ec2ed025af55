from .color_similarity import FreeSOLODataPreprocessor

__all__ = ['FreeSOLODataPreprocessor']
