"""Host memory kept for reuse while a model runs on the CPU (:func:`~freesolo_mmdet.utils.keep_freed_host_memory`).

A speed option for CPU runs, not part of the method: the same computation, without the page faults of fresh
``mmap`` blocks for every large tensor. It does nothing for a model on a GPU.
"""
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from torch import nn

from mmdet.registry import HOOKS
from freesolo_mmdet.utils.host_memory import keep_freed_host_memory

__all__ = ['KeepFreedMemoryHook', 'keep_freed_memory_on_cpu', 'wants_freed_memory_kept']


def wants_freed_memory_kept(cfg: Config) -> bool:
    """Whether ``cfg.custom_hooks`` has a :class:`KeepFreedMemoryHook`: the models this package builds outside a
    runner from ``cfg`` (Free Mask, pseudo labels, predictions) then run with it too."""
    return any(isinstance(hook, dict) and hook.get('type') in ('KeepFreedMemoryHook', KeepFreedMemoryHook)
               for hook in cfg.get('custom_hooks') or [])


def keep_freed_memory_on_cpu(model: nn.Module) -> Optional[bool]:
    """Keep freed host memory (process-wide, for the rest of the process) if ``model``'s first parameter is on
    the CPU. Returns None for a model on another device, else whether the C library took the setting."""
    param = next(model.parameters(), None)
    if param is not None and param.device != torch.device('cpu'):
        return None
    return keep_freed_host_memory()


@HOOKS.register_module()
class KeepFreedMemoryHook(Hook):
    """Keeps freed host memory for reuse (:func:`keep_freed_memory_on_cpu`) from ``before_run`` on, when the
    runner's model is on the CPU.

    Add ``custom_hooks = [dict(type='KeepFreedMemoryHook')]``. The process's resident memory then stays at its
    peak until it exits; the setting is process-wide and stays after the run.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        applied = keep_freed_memory_on_cpu(runner.model)
        if applied is False:
            runner.logger.info('KeepFreedMemoryHook: the C library is not glibc; host memory is left as it is')
