from .checkpoint_safe_globals import (history_buffer_statistic,
                                      register_checkpoint_safe_globals)

__all__ = ['register_checkpoint_safe_globals', 'history_buffer_statistic']
