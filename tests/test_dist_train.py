"""tools/dist_train.sh: 2 CPU processes over gloo, with a SelfTrainingHook refresh in between."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_self_training_hook import NUM_IMAGES, tiny_config, write_scenes

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
import json, os.path as osp
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class RankProbe(Hook):
    """Writes what this rank trained on to work_dir/rank{r}.json."""

    def __init__(self):
        self.counts, self.initial, self.reset = [], None, []

    def before_train(self, runner):
        self.initial = {k: v.clone() for k, v in runner.model.module.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.counts.append([len(sample.gt_instances) for sample in data_batch['data_samples']])
        state = runner.model.module.state_dict()  # after SelfTrainingHook's refresh (registered first)
        self.reset.append(all(torch.equal(v, self.initial[k]) for k, v in state.items()))

    def after_run(self, runner):
        dataset = runner.train_dataloader.dataset
        hook = next(h for h in runner.hooks if type(h).__name__ == 'SelfTrainingHook')
        with open(osp.join(runner.work_dir, f'rank{runner.rank}.json'), 'w') as f:
            json.dump(dict(world_size=runner.world_size, round=hook.round, ann_file=dataset.ann_file,
                           img_ids=sorted(dataset.get_data_info(i)['img_id'] for i in range(len(dataset))),
                           counts=self.counts, reset=self.reset), f)
'''


def test_two_cpu_processes_refresh_together(tmp_path):
    scenes = write_scenes(tmp_path / 'scenes')
    (tmp_path / 'rank_probe.py').write_text(PROBE)
    work_dir = tmp_path / 'work'
    # pipeline: the config's; reset_weights: the in-place reset must work under DDP
    hook = dict(refresh_at=[2], score_thr=0.0, max_per_img=3, max_width=None, reset_weights=True)
    imports = ['freesolo_mmdet', 'freesolo_mmdet.engine.hooks.self_training_hook', 'rank_probe']
    cfg = tiny_config(scenes, work_dir, max_iters=4, hook=hook,
                      custom_imports=dict(imports=imports, allow_failed_imports=False),
                      env_cfg=dict(dist_cfg=dict(backend='gloo')))
    cfg['train_dataloader']['batch_size'] = 1
    cfg['default_hooks']['checkpoint']['interval'] = 4
    cfg['custom_hooks'].append(dict(type='RankProbe'))
    config = tmp_path / 'config.py'
    config.write_text(''.join(f'{key} = {value!r}\n' for key, value in cfg.items()))

    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(29500 + os.getpid() % 1000),
               PYTHONPATH=str(tmp_path))
    proc = subprocess.run(['bash', str(REPO / 'tools' / 'dist_train.sh'), str(config), '2'], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ann_file = work_dir / 'self_training' / 'round1.json'
    ranks = [json.loads((work_dir / f'rank{r}.json').read_text()) for r in range(2)]
    for rank in ranks:
        assert rank['world_size'] == 2 and rank['round'] == 1 and rank['ann_file'] == str(ann_file)
        assert rank['img_ids'] == list(range(1, NUM_IMAGES + 1))
        assert rank['counts'] == [[2], [2], [3], [3]]  # coarse masks, then the round-1 labels
        assert rank['reset'] == [False, True, False, False]  # the refresh after iteration 2 reset the weights
    coco = json.loads(ann_file.read_text())
    image_ids = [image['id'] for image in coco['images']]
    assert image_ids == list(range(1, NUM_IMAGES + 1))  # both shards, in order, once
    assert [ann['id'] for ann in coco['annotations']] == list(range(1, 3 * NUM_IMAGES + 1))
    meta = torch.load(work_dir / 'iter_4.pth', weights_only=True)['meta']['self_training']
    initial_weights = work_dir / 'self_training' / 'initial_weights.pth'
    assert meta == dict(round=1, ann_files=[str(ann_file)], initial_weights=str(initial_weights))


@pytest.mark.parametrize('script, argv', [('dist_train.sh', ['only_config.py']),
                                          ('slurm_train.sh', ['partition', 'job', 'config.py'])])
def test_launch_scripts_check_their_arguments(script, argv):
    proc = subprocess.run(['bash', str(REPO / 'tools' / script), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage:' in proc.stderr
