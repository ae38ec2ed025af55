"""Channels-last memory format for a model and the batches its data preprocessor makes.

A speed option, not part of the method: the same convolutions in NHWC order. On the demo's 2-core CPU (oneDNN),
``benchmarks/channels_last.py`` measured channels-last / NCHW: 0.86 for the pipeline's training iteration in the
runner (demo and held-out scales), 0.84 for inference, 0.75 for the Free Mask generator. Results differ from NCHW
only in floating-point rounding.
"""
from typing import Any

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from mmdet.registry import HOOKS

__all__ = ['ChannelsLastHook', 'to_channels_last', 'wants_channels_last']


def _inputs_channels_last(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of a data preprocessor: its (N, C, H, W) ``inputs`` in channels-last order."""
    if isinstance(output, dict) and isinstance(output.get('inputs'), torch.Tensor) and output['inputs'].dim() == 4:
        output['inputs'] = output['inputs'].contiguous(memory_format=torch.channels_last)
    return output


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model``'s 4-d parameters and buffers converted in place to channels-last order, and its
    ``data_preprocessor`` (if any) made to return channels-last ``inputs``. Unwraps a model wrapper (DDP);
    calling it twice changes nothing more. Returns the (unwrapped) model."""
    model = model.module if is_model_wrapper(model) else model
    model.to(memory_format=torch.channels_last)
    preprocessor = getattr(model, 'data_preprocessor', None)
    if isinstance(preprocessor, nn.Module) and not hasattr(preprocessor, '_channels_last_handle'):
        preprocessor._channels_last_handle = preprocessor.register_forward_hook(_inputs_channels_last)
    return model


def wants_channels_last(cfg: Config) -> bool:
    """Whether ``cfg.custom_hooks`` has a :class:`ChannelsLastHook`: the models this package builds outside
    a runner from ``cfg`` (Free Mask, pseudo labels, predictions) then use the format too."""
    return any(isinstance(hook, dict) and hook.get('type') in ('ChannelsLastHook', ChannelsLastHook)
               for hook in cfg.get('custom_hooks') or [])


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Runs the runner's model in channels-last order (:func:`to_channels_last`) for training, val and test.

    Add ``custom_hooks = [dict(type='ChannelsLastHook')]``. It acts in ``before_run``, before the weights are
    initialised or loaded; these copy into the converted tensors, so they keep the format. Under DDP the model is
    already wrapped: PyTorch then copies each gradient into its bucket (it warns once that strides differ).
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        to_channels_last(runner.model)
