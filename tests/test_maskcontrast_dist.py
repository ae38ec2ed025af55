"""MaskContrast under DDP, 2 CPU processes over gloo. tools/dist_train.sh: the ranks train on different images and
end with identical states: weights (DDP), EMA key encoder and the memory bank (gathered over the ranks).
tools/dist_test.sh: the metrics' pixel samples merge over the ranks into those of one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from test_maskcontrast_smoke import REPO, load_tool, unique_names, write_config

PROBE = '''
import hashlib, json, os.path as osp
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class MaskContrastRankProbe(Hook):
    """Writes this rank's final model state and a digest of each batch it trained on to work_dir."""

    def __init__(self):
        self.batches = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.batches.append(hashlib.sha1(data_batch['inputs'].numpy().tobytes()).hexdigest())

    def after_train(self, runner):
        torch.save(runner.model.module.state_dict(), osp.join(runner.work_dir, f'rank{runner.rank}.pth'))
        with open(osp.join(runner.work_dir, f'rank{runner.rank}.json'), 'w') as f:
            json.dump(dict(world_size=runner.world_size, wrapper=type(runner.model).__name__, batches=self.batches), f)
'''


def test_two_cpu_processes_agree(tmp_path, monkeypatch):
    (tmp_path / 'mc_rank_probe.py').write_text(PROBE)
    work_dir = tmp_path / 'work'
    config = write_config(tmp_path, work_dir, max_iters=3, batch_size=2,
                          custom_imports=dict(imports=['projects.maskcontrast.maskcontrast', 'mc_rank_probe'],
                                              allow_failed_imports=False),
                          custom_hooks=[dict(type='LegacyCheckpointHook'), dict(type='MaskContrastRankProbe')],
                          val_cfg=None, val_dataloader=None, val_evaluator=None)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(29500 + os.getpid() % 1000 + 7),
               PYTHONPATH=f'{REPO}:{tmp_path}', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(['bash', str(Path(REPO) / 'tools' / 'dist_train.sh'), config, '2'], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((work_dir / f'rank{r}.json').read_text()) for r in range(2)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    assert ranks[0]['wrapper'] == 'MMDistributedDataParallel'
    assert len(ranks[0]['batches']) == len(ranks[1]['batches']) == 3
    assert all(a != b for a, b in zip(ranks[0]['batches'], ranks[1]['batches']))  # each rank its own images
    states = [torch.load(work_dir / f'rank{r}.pth', map_location='cpu', weights_only=True) for r in range(2)]
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    # the same bank on both ranks although each enqueued the prototypes of its own images: they were gathered
    count = int(states[0]['memory.count'])
    assert 0 < count <= 16
    assert torch.allclose(states[0]['memory.bank'][:count].norm(dim=1), torch.ones(count))
    assert (work_dir / 'iter_3.pth').is_file()

    # evaluation: 8 val + 7 probe images on 2 ranks (the sampler repeats one image to fill the last batch)
    options = ['--cfg-options', 'test_dataloader.dataset.datasets.1.max_images=7']
    proc = subprocess.run(['bash', str(Path(REPO) / 'tools' / 'dist_test.sh'), config, str(work_dir / 'iter_3.pth'),
                           '2', '--work-dir', str(tmp_path / 'dist_test'), *options], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [json.loads(p.read_text()) for p in (tmp_path / 'dist_test').glob('*/*.json')]
    assert len(logged) == 1
    monkeypatch.syspath_prepend(str(tmp_path))  # the config imports mc_rank_probe
    single = load_tool('test').main([config, str(work_dir / 'iter_3.pth'), '--work-dir', str(tmp_path / 'test'),
                                     *options, *unique_names()])
    for key in ('kmeans/mIoU_per_seed', 'kmeans/IoU_per_class', 'probe/mIoU', 'probe/IoU_per_class'):
        assert logged[0][key] == single[key], key
