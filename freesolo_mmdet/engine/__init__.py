from .hooks import (ChannelsLastHook, KeepFreedMemoryHook, RankZeroLoggerHook, SelfTrainingHook,
                    keep_freed_memory_on_cpu, to_channels_last, wants_channels_last, wants_freed_memory_kept)
from .pseudo_labels import (collect_pseudo_label_coco, find_test_pipeline, predict_pseudo_labels,
                            select_pseudo_labels)

__all__ = ['ChannelsLastHook', 'KeepFreedMemoryHook', 'RankZeroLoggerHook', 'SelfTrainingHook', 'to_channels_last',
           'wants_channels_last', 'keep_freed_memory_on_cpu', 'wants_freed_memory_kept',
           'select_pseudo_labels', 'predict_pseudo_labels', 'collect_pseudo_label_coco', 'find_test_pipeline']
