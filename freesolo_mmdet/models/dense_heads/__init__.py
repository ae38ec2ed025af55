from .freesolo_head import FreeSOLOHead

__all__ = ['FreeSOLOHead']
