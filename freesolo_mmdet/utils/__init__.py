from .checkpoint_safe_globals import (history_buffer_statistic,
                                      register_checkpoint_safe_globals)
from .host_memory import keep_freed_host_memory

__all__ = ['register_checkpoint_safe_globals', 'history_buffer_statistic', 'keep_freed_host_memory']
