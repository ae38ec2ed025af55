"""Let torch >= 2.6 (``weights_only=True`` by default) load mmengine's own checkpoints.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``. Its checkpoints store the
``MessageHub`` (``HistoryBuffer`` objects holding numpy arrays), which the restricted
unpickler refuses: ``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

Rather than switching the protection off for every load (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``),
we allow exactly the globals such a checkpoint needs:

- ``HistoryBuffer`` and the numpy pieces of an array (``_reconstruct``, ``ndarray``, ``dtype``,
  ``scalar``), under their numpy 1.x and 2.x module paths;
- ``builtins.getattr``, mapped to :func:`history_buffer_statistic`, which resolves only the
  ``HistoryBuffer`` statistics methods (``HistoryBuffer.__getstate__`` pickles them as
  ``getattr(HistoryBuffer, 'mean')``) and raises for anything else. A plain ``getattr`` would
  let a crafted file walk from any allowed object to arbitrary code.
"""
from typing import Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


#: statistics methods ``HistoryBuffer.__init__`` registers; ``register_statistics`` may add more.
BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stand-in for ``getattr`` in checkpoints: ``getattr(HistoryBuffer, <statistics method>)`` only."""
    if owner is HistoryBuffer:
        if name in HistoryBuffer._statistics_methods:
            return HistoryBuffer._statistics_methods[name]
        if name in BUILTIN_STATISTICS:
            return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'Refusing getattr({getattr(owner, "__name__", type(owner).__name__)}, {name!r}) in a '
        'checkpoint: only the statistics methods of mmengine HistoryBuffer are allowed.')


def _numpy_globals() -> list:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed.append((multiarray._reconstruct, f'{module}._reconstruct'))
        allowed.append((multiarray.scalar, f'{module}.scalar'))
    # numpy >= 1.25 pickles some dtypes through their classes in ``numpy.dtypes``.
    for dtype_cls in vars(getattr(np, 'dtypes', object)).values():
        if isinstance(dtype_cls, type) and issubclass(dtype_cls, np.dtype):
            allowed.append((dtype_cls, f'numpy.dtypes.{dtype_cls.__name__}'))
    return allowed


def register_checkpoint_safe_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for torch's ``weights_only`` unpickler."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # pragma: no cover - torch < 2.4 has no weights_only default
        return
    add_safe_globals([
        HistoryBuffer,
        (history_buffer_statistic, 'builtins.getattr'),
        *_numpy_globals(),
    ])
