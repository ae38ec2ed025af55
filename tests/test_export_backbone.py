"""tools/export_backbone.py and configs/densecl: DenseCL checkpoint -> bare backbone weights for mmdet."""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmdet.models.backbones import ResNet
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / 'configs' / 'densecl' / 'densecl_r18_demo.py'
SPEC = importlib.util.spec_from_file_location('export_backbone', REPO / 'tools' / 'export_backbone.py')
tool = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tool)


def _mmpretrain_models():
    """mmpretrain's model registry, or None where ``mmpretrain.models`` cannot be imported (it needs torchvision)."""
    try:
        import mmpretrain.models  # noqa: F401
        from mmpretrain.registry import MODELS
    except (ImportError, RuntimeError):
        return None
    return MODELS


def _save_training_checkpoint(path: Path, state_dict: dict) -> None:
    """Save like mmengine's Runner: meta, state_dict, and a message hub holding HistoryBuffers."""
    hub = MessageHub.get_instance('test_export_backbone')
    hub.update_scalar('train/loss', 4.2)
    torch.save({'meta': {'iter': 2, 'cfg': 'model = dict(type="DenseCL")'}, 'state_dict': state_dict,
                'message_hub': hub.state_dict()}, path)


def _load_strict(depth: int, path: Path) -> ResNet:
    resnet = ResNet(depth=depth)
    resnet.load_state_dict(torch.load(path, weights_only=True)['state_dict'], strict=True)
    return resnet


def _assert_same_tensors(module: torch.nn.Module, expected: dict) -> None:
    got = module.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def _fake_densecl_state(depth: int = 18) -> dict:
    """DenseCL's key layout (mmpretrain's ResNet names its tensors as mmdet's does): online backbone, EMA copy
    with other values, neck, queues."""
    torch.manual_seed(0)
    online = ResNet(depth=depth).state_dict()
    state = {f'backbone.{k}': v for k, v in online.items()}
    state.update({f'encoder_k.module.0.{k}': v.clone() + 1 for k, v in online.items()})
    state.update({'encoder_k.steps': torch.tensor(2), 'neck.mlp.0.weight': torch.randn(512, 512),
                  'queue': torch.randn(128, 256), 'queue_ptr': torch.zeros(1, dtype=torch.long)})
    return state


def test_export_keeps_exactly_the_online_backbone(tmp_path):
    state = _fake_densecl_state()
    src, out = tmp_path / 'iter_2.pth', tmp_path / 'backbone.pth'
    _save_training_checkpoint(src, state)
    assert tool.main([str(src), str(out)]) == 0
    expected = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    _assert_same_tensors(_load_strict(18, out), expected)
    meta = torch.load(out, weights_only=True)['meta']
    assert meta['source'] == str(src) and meta['prefix'] == 'backbone.' and meta['source_meta']['iter'] == 2


def test_prefix_option_selects_another_encoder(tmp_path):
    state = _fake_densecl_state()
    src, out = tmp_path / 'ckpt.pth', tmp_path / 'momentum_backbone.pth'
    _save_training_checkpoint(src, state)
    assert tool.main([str(src), str(out), '--prefix', 'encoder_k.module.0.']) == 0
    expected = {k[len('encoder_k.module.0.'):]: v for k, v in state.items() if k.startswith('encoder_k.module.0.')}
    _assert_same_tensors(_load_strict(18, out), expected)


def test_bad_inputs_give_clear_errors_and_no_output(tmp_path, capsys):
    out = tmp_path / 'out.pth'
    assert tool.main([str(tmp_path / 'missing.pth'), str(out)]) == 1
    assert 'checkpoint not found' in capsys.readouterr().err

    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable torch checkpoint'):
        tool.export_backbone(str(corrupt), str(out))

    no_backbone = tmp_path / 'no_backbone.pth'
    _save_training_checkpoint(no_backbone, {'encoder.conv1.weight': torch.zeros(1), 'encoder.bn1.bias': torch.zeros(1),
                                            'head.fc.weight': torch.zeros(1), 'queue': torch.zeros(1)})
    with pytest.raises(ValueError, match=r"no key starting with 'backbone\.'.*'encoder\.' \(2\), 'head\.' \(1\), "
                       r"'queue' \(1\)"):
        tool.export_backbone(str(no_backbone), str(out))

    no_tensors = tmp_path / 'no_tensors.pth'
    torch.save({'state_dict': {}}, no_tensors)
    with pytest.raises(ValueError, match='no state dict of tensors'):
        tool.export_backbone(str(no_tensors), str(out))
    assert not out.exists()


def test_demo_config_fits_resnet18():
    cfg = Config.fromfile(str(DEMO_CONFIG))
    model = cfg.model
    assert model.backbone.depth == 18
    assert model.neck.in_channels == ResNet(depth=18).feat_dim == 512
    assert model.queue_len % cfg.train_dataloader.batch_size == 0  # DenseCL asserts this in every step
    assert cfg.train_dataloader.dataset.with_label is False
    assert '_scope_' not in cfg.train_dataloader.collate_fn  # the Runner would pass it to default_collate
    assert cfg.param_scheduler[0].T_max == cfg.train_cfg.max_iters


def test_real_densecl_model_exports_its_backbone(tmp_path):
    models = _mmpretrain_models()
    if models is None:
        pytest.skip('mmpretrain.models cannot be imported here (it imports torchvision)')
    cfg = Config.fromfile(str(DEMO_CONFIG))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        densecl = models.build(cfg.model)
    with torch.no_grad():  # make the online backbone differ from its EMA copy, which starts equal
        for value in densecl.backbone.state_dict().values():
            value.add_(1)
    src, out = tmp_path / 'densecl.pth', tmp_path / 'backbone.pth'
    _save_training_checkpoint(src, densecl.state_dict())
    tool.export_backbone(str(src), str(out))
    _assert_same_tensors(_load_strict(18, out), densecl.backbone.state_dict())
