from .channels_last_hook import ChannelsLastHook, to_channels_last, wants_channels_last
from .rank_zero_logger_hook import RankZeroLoggerHook
from .self_training_hook import SelfTrainingHook

__all__ = ['ChannelsLastHook', 'RankZeroLoggerHook', 'SelfTrainingHook', 'to_channels_last', 'wants_channels_last']
