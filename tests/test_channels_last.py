"""ChannelsLastHook: the demo's models in channels-last order compute what they compute in NCHW order."""
import copy
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks

from freesolo_mmdet.datasets.image_list import build_inference_model
from freesolo_mmdet.engine import ChannelsLastHook, to_channels_last, wants_channels_last

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_CONFIG = osp.join(ROOT, 'configs', 'demo', 'freesolo_light_demo.py')
SIDE = 96


def demo_model_config() -> Config:
    cfg = Config.fromfile(TRAIN_CONFIG)
    cfg.model.backbone.init_cfg = None  # random weights: no pretrained file needed
    return cfg


def raw_batch() -> dict:
    """Two random uint8 images of SIDE px, each with two square pseudo labels (score, embedding)."""
    rng = np.random.default_rng(0)
    inputs, samples = [], []
    for index, boxes in enumerate((([8, 8, 48, 48], [40, 30, 90, 80]), ([20, 50, 70, 90], [0, 0, 30, 40]))):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, SIDE, SIDE), dtype=np.uint8)))
        masks = np.zeros((len(boxes), SIDE, SIDE), np.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes):
            mask[y1:y2, x1:x2] = 1
        sample = DetDataSample(metainfo=dict(img_id=index, ori_shape=(SIDE, SIDE), img_shape=(SIDE, SIDE),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            masks=BitmapMasks(masks, SIDE, SIDE), bboxes=HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32)),
            labels=torch.zeros(len(boxes), dtype=torch.long), scores=torch.tensor([0.9, 0.7]),
            embs=torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(len(boxes), 128))).float()))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.fixture(scope='module')
def models():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(demo_model_config().model)
    return model, to_channels_last(copy.deepcopy(model))


def test_weights_and_inputs_are_channels_last(models):
    nchw, channels_last = models
    conv = channels_last.backbone.conv1.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nchw.backbone.conv1.conv.weight.is_contiguous()
    batch = channels_last.data_preprocessor(copy.deepcopy(raw_batch()), training=False)
    assert batch['inputs'].shape == (2, 3, SIDE, SIDE)
    assert batch['inputs'].is_contiguous(memory_format=torch.channels_last) and not batch['inputs'].is_contiguous()
    # a second call converts nothing more and adds no second forward hook
    assert to_channels_last(channels_last) is channels_last
    assert len(channels_last.data_preprocessor._forward_hooks) == 1


def test_same_losses_and_predictions(models):
    nchw, channels_last = models
    MessageHub.get_current_instance().update_info('iter', 10**6)  # the pairwise loss at full weight
    losses = []
    for model in (nchw, channels_last):
        model.train()
        batch = model.data_preprocessor(copy.deepcopy(raw_batch()), training=True)
        losses.append({k: float(v) for k, v in model(**batch, mode='loss').items() if 'loss' in k})
    assert losses[0].keys() == losses[1].keys() and len(losses[0]) >= 3
    for key, value in losses[0].items():
        assert losses[1][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    preds = []
    for model in (nchw, channels_last):
        model.eval()
        with torch.no_grad():
            preds.append(model.test_step(copy.deepcopy(raw_batch())))
    for a, b in zip(*preds):
        assert len(a.pred_instances) == len(b.pred_instances) > 0
        assert torch.allclose(a.pred_instances.scores, b.pred_instances.scores, atol=1e-5)
        disagree = (a.pred_instances.masks != b.pred_instances.masks).float().mean()
        assert disagree < 1e-3  # a pixel at the 0.5 threshold may round either way


def test_hook_and_inference_builder_follow_the_config(tmp_path):
    init_default_scope('mmdet')
    cfg = demo_model_config()
    assert wants_channels_last(cfg)  # the demo config has the hook
    model = build_inference_model(cfg, None, 'cpu')
    assert model.backbone.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    cfg.custom_hooks = []
    assert not wants_channels_last(cfg)
    model = build_inference_model(cfg, None, 'cpu')
    assert model.backbone.conv1.conv.weight.is_contiguous()
    runner = SimpleNamespace(model=model)
    ChannelsLastHook().before_run(runner)
    assert model.backbone.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
