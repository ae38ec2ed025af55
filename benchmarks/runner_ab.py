"""The pipeline's training in mmengine's Runner, switched between two variants (A and B) every few iterations, so
that the machine's drift weighs on both: the helper of ``channels_last.py --labels`` and ``train_iter_ab.py``."""
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmdet.registry import HOOKS


@HOOKS.register_module()
class AlternatingVariantHook(Hook):
    """Calls ``switch(runner, use_b)`` before every iteration, with ``use_b`` flipping every ``block`` iterations
    (A first), and times each iteration (data loading included) after the first ``skip`` of a block.
    ``AlternatingVariantHook.switch`` is set by :func:`alternating_iterations`; ``last`` is the last one built."""

    priority = 'VERY_HIGH'
    switch = None
    last = None

    def __init__(self, block: int = 10, skip: int = 2) -> None:
        self.block, self.skip = block, skip
        self.times: Dict[bool, List[float]] = {False: [], True: []}
        self.use_b = False
        self.start = None
        AlternatingVariantHook.last = self

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.use_b = (batch_idx // self.block) % 2 == 1
        AlternatingVariantHook.switch(runner, self.use_b)
        self.start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if batch_idx % self.block >= self.skip:
            self.times[self.use_b].append(time.perf_counter() - self.start)


def alternating_iterations(config: str, labels: str, images: str, iters: int,
                           switch: Callable[[object, bool], None],
                           keep_custom_hooks: bool = True) -> Dict[bool, List[float]]:
    """Train ``config`` (a pipeline training config) on ``labels`` (a COCO json of ``images``) for ``iters``
    iterations, as the pipeline's round 1 does, with ``switch(runner, use_b)`` before every iteration (see
    :class:`AlternatingVariantHook`); returns the iteration times in seconds, ``{False: A's, True: B's}``.
    ``keep_custom_hooks=False`` drops the config's own custom hooks (e.g. ``ChannelsLastHook``, when the switch
    sets the memory format itself)."""
    from freesolo_mmdet.apis.training import derive_train_config, train
    cfg = Config.fromfile(config)
    AlternatingVariantHook.switch = switch
    with tempfile.TemporaryDirectory() as work_dir:
        cfg = derive_train_config(cfg, labels, images, work_dir, max_iters=iters, checkpoints_per_round=1)
        hooks = list(cfg.get('custom_hooks', [])) if keep_custom_hooks else []
        cfg.custom_hooks = hooks + [dict(type='AlternatingVariantHook')]
        cfg.default_hooks.logger.interval = 10**6
        train(cfg, resume=False)
    return AlternatingVariantHook.last.times


def print_medians(times: Dict[bool, List[float]], names: tuple, what: str) -> None:
    """One line: the median iteration of A and of B and their ratio B / A."""
    a, b = statistics.median(times[False]), statistics.median(times[True])
    print(f'{torch.get_num_threads()} threads; {what}; medians of {len(times[False])} and {len(times[True])} '
          'iterations')
    print(f'{"":52s} {names[0]:>9s} {names[1]:>9s} {"ratio":>7s}')
    print(f'{"training iteration (data, step, optimizer, hooks)":52s} {1000 * a:7.0f}ms {1000 * b:7.0f}ms '
          f'{b / a:7.3f}')
