"""mmengine's ``LoggerHook`` with the test metrics' json file written by the main process only."""
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import LoggerHook

from mmdet.registry import HOOKS

__all__ = ['RankZeroLoggerHook']


@HOOKS.register_module()
class RankZeroLoggerHook(LoggerHook):
    """``LoggerHook`` whose ``after_test_epoch`` writes ``<log_dir>/<timestamp>.json`` on rank 0 alone.

    mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the test metrics from every rank into the same
    file. The ranks' timings differ, so their json texts differ in length, and the writes of
    ``tools/dist_test.sh`` can leave one text followed by the tail of another: a file that ``json.load``
    refuses ("Extra data"). Every rank still logs the metrics line. Everything else is the stock hook.
    """

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)
            return
        _, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
