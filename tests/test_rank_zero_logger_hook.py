"""RankZeroLoggerHook: under tools/dist_test.sh only rank 0 writes <timestamp>.json (mmengine's LoggerHook writes
it from every rank, and the ranks' texts of different lengths interleave into invalid json)."""
import json
from types import SimpleNamespace
from unittest import mock

import pytest
from mmengine.config import Config
from mmengine.hooks import LoggerHook

from freesolo_mmdet.engine.hooks import RankZeroLoggerHook, rank_zero_logger_hook
from test_maskcontrast_smoke import REPO


def fake_runner(tmp_path, time_s: float):
    processor = mock.Mock()
    processor.get_log_after_epoch.return_value = ({'probe/mIoU': 41.5, 'time': time_s}, f'mIoU 41.5, {time_s} s')
    return SimpleNamespace(log_processor=processor, test_dataloader=[0] * 4, logger=mock.Mock(),
                           log_dir=str(tmp_path), timestamp='20261201_000000')


def run_hook(hook, runner, rank: int):
    with mock.patch.object(rank_zero_logger_hook, 'is_main_process', return_value=rank == 0):
        hook.before_run(runner)
        hook.after_test_epoch(runner)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_only_rank_zero_writes_the_test_json(tmp_path, order):
    # rank 1 measured a longer time text than rank 0; the file is rank 0's whatever the order
    runners = {0: fake_runner(tmp_path, 0.5), 1: fake_runner(tmp_path, 0.123456789)}
    for rank in order:
        run_hook(RankZeroLoggerHook(), runners[rank], rank)
        runners[rank].logger.info.assert_called_once()  # every rank logs its line
    assert [p.name for p in tmp_path.glob('*.json')] == ['20261201_000000.json']
    assert json.loads((tmp_path / '20261201_000000.json').read_text()) == {'probe/mIoU': 41.5, 'time': 0.5}


def test_the_stock_hook_writes_from_every_rank(tmp_path):
    """The defect the hook exists for: rank 1's write replaces (or interleaves with) rank 0's."""
    runners = {0: fake_runner(tmp_path, 0.5), 1: fake_runner(tmp_path, 0.123456789)}
    for rank in (0, 1):  # it asks no rank; if mmengine fixes this, the hook can go
        hook = LoggerHook()
        hook.before_run(runners[rank])
        hook.after_test_epoch(runners[rank])
    assert json.loads((tmp_path / '20261201_000000.json').read_text())['time'] == 0.123456789


@pytest.mark.parametrize('config', ['configs/freesolo_r50.py', 'configs/demo/freesolo_light_demo.py',
                                    'projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py',
                                    'projects/maskcontrast/configs/maskcontrast_r50_fpn_coco.py'])
def test_the_configs_use_it(config):
    cfg = Config.fromfile(f'{REPO}/{config}')
    assert cfg.default_hooks.logger.type == 'RankZeroLoggerHook'
    assert any(name.startswith('freesolo_mmdet') for name in cfg.custom_imports.imports)
