"""FreeSOLO as an MMDetection 3.x plugin.

``import freesolo_mmdet`` (or ``custom_imports = dict(imports=['freesolo_mmdet'])``
in a config) registers every component into mmdet's registries.
"""
from .utils import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import datasets, engine, evaluation, free_mask, models  # noqa: E402,F401

__version__ = '0.1.0'
