from .channels_last_hook import ChannelsLastHook, to_channels_last, wants_channels_last
from .keep_freed_memory_hook import KeepFreedMemoryHook, keep_freed_memory_on_cpu, wants_freed_memory_kept
from .rank_zero_logger_hook import RankZeroLoggerHook
from .self_training_hook import SelfTrainingHook

__all__ = ['ChannelsLastHook', 'KeepFreedMemoryHook', 'RankZeroLoggerHook', 'SelfTrainingHook',
           'keep_freed_memory_on_cpu', 'to_channels_last', 'wants_channels_last', 'wants_freed_memory_kept']
