"""Checkpoints of the former hand-written loop (``latest.pth``): converted on load, refused on resume."""
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

__all__ = ['is_legacy_checkpoint', 'convert_legacy_checkpoint', 'LegacyCheckpointHook']

#: top-level keys of the former ``projects/maskcontrast/tools/train.py`` checkpoints
LEGACY_KEYS = frozenset({'state_dict', 'optimizer', 'scheduler', 'meta', 'log'})


def is_legacy_checkpoint(checkpoint: dict) -> bool:
    """Whether ``checkpoint`` was written by the former loop: its keys, a ``log`` list, no ``message_hub``."""
    return (isinstance(checkpoint, dict) and 'log' in checkpoint and 'message_hub' not in checkpoint
            and set(checkpoint) <= LEGACY_KEYS and isinstance(checkpoint.get('meta'), dict)
            and 'epoch' not in checkpoint['meta'])


def convert_legacy_checkpoint(checkpoint: dict) -> dict:
    """The weights of a former-loop checkpoint as an mmengine one (``state_dict`` + ``meta``).

    The model's state keys did not change (query network, ``key_encoder.*``, ``memory.*``); the optimizer
    and scheduler states are dropped: their layout was the former loop's, so the result loads weights
    (``load_from``, ``tools/test.py``) but cannot be resumed.
    """
    meta = dict(checkpoint.get('meta') or {})
    return dict(state_dict=checkpoint['state_dict'],
                meta=dict(iter=meta.get('iter'), converted_from='maskcontrast legacy latest.pth',
                          legacy_config=meta.get('config')))


@HOOKS.register_module()
class LegacyCheckpointHook(Hook):
    """Load a former-loop ``latest.pth`` through :func:`convert_legacy_checkpoint`; refuse to resume one
    (or a converted one) with an error that says what to do instead."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        legacy = is_legacy_checkpoint(checkpoint)
        converted = (checkpoint.get('meta') or {}).get('converted_from') is not None
        if not (legacy or converted):
            return
        if runner.cfg.get('resume', False):
            from freesolo_mmdet.apis.config import InputError
            raise InputError('this checkpoint comes from the former MaskContrast loop (latest.pth): its optimizer '
                             'state cannot be resumed by mmengine. Start a new run from its weights instead: '
                             'load_from=<checkpoint> without --resume (tools/test.py CONFIG <checkpoint> '
                             'evaluates it)')
        if legacy:
            converted_checkpoint = convert_legacy_checkpoint(checkpoint)
            checkpoint.clear()
            checkpoint.update(converted_checkpoint)
            runner.logger.info('converted a former-loop MaskContrast checkpoint (latest.pth) on load: weights only')
