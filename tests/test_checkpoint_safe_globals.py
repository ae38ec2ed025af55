"""torch >= 2.6 loads mmengine checkpoints with ``weights_only=True`` once the plugin is imported."""
import os
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner

import freesolo_mmdet  # noqa: F401  (registers the safe globals)


class TinyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = inputs if isinstance(inputs, torch.Tensor) else torch.stack(inputs)
        if mode == 'loss':
            return dict(loss=self.linear(x).pow(2).mean())
        return self.linear(x)


def _runner(work_dir, max_iters, **kwargs) -> Runner:
    data = [dict(inputs=torch.tensor([float(i), 1.0])) for i in range(8)]
    return Runner(
        model=TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=data, batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        randomness=dict(seed=0),
        **kwargs)


@pytest.fixture(scope='module')
def saved_run(tmp_path_factory):
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') is None
    work_dir = tmp_path_factory.mktemp('run')
    runner = _runner(work_dir, max_iters=4)
    runner.train()
    return work_dir, {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_weights_only_load_of_a_runner_checkpoint(saved_run):
    work_dir, _ = saved_run
    ckpt = torch.load(work_dir / 'iter_4.pth', weights_only=True)
    assert ckpt['meta']['iter'] == 4
    loss_buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss_buffer, HistoryBuffer)
    assert loss_buffer.statistics('current') == pytest.approx(loss_buffer.data[0][-1])


def test_resume_continues_from_saved_iteration(saved_run, tmp_path):
    work_dir, final_state = saved_run
    runner = _runner(work_dir, max_iters=6, resume=True)
    runner.train()
    assert runner.iter == 6
    resumed_log = runner.message_hub.get_scalar('train/loss')
    assert len(resumed_log.data[0]) == 6  # 4 restored values + 2 new ones


def test_load_from_restores_weights(saved_run, tmp_path):
    work_dir, final_state = saved_run
    runner = _runner(tmp_path, max_iters=0, load_from=str(work_dir / 'iter_4.pth'))
    runner.load_or_resume()
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, final_state[key])


class _Evil:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only the statistics methods'):
        torch.load(path, weights_only=True)
