from .rank_zero_logger_hook import RankZeroLoggerHook
from .self_training_hook import SelfTrainingHook

__all__ = ['RankZeroLoggerHook', 'SelfTrainingHook']
