import pytest
import torch
from mmdet.models.backbones import MobileNetV2

from freesolo_mmdet.utils.offline_backbones import (convert_deepsort_mobilenetv2,
                                                    find_deepsort_mobilenetv2)


def test_converted_weights_load_strictly_and_keep_values(tmp_path):
    src = torch.load(find_deepsort_mobilenetv2(), weights_only=True)
    out = convert_deepsort_mobilenetv2(str(tmp_path / 'mnv2.pth'))
    state = torch.load(out, weights_only=True)['state_dict']
    model = MobileNetV2(out_indices=(7, ))
    model.load_state_dict(state, strict=True)
    torch.testing.assert_close(model.conv1.conv.weight, src['features.0.0.weight'])
    torch.testing.assert_close(model.layer7[0].linear_conv.bn.running_var,
                               src['features.17.conv.7.running_var'])
    torch.testing.assert_close(model.conv2.conv.weight, src['features.18.0.weight'])


def test_mismatched_source_is_refused(tmp_path):
    src = torch.load(find_deepsort_mobilenetv2(), weights_only=True)
    src['features.0.0.weight'] = torch.zeros(8, 3, 3, 3)
    bad = tmp_path / 'bad.pt'
    torch.save(src, bad)
    with pytest.raises(ValueError, match='does not fit conv1.conv.weight'):
        convert_deepsort_mobilenetv2(str(tmp_path / 'out.pth'), src_path=str(bad))
    assert not (tmp_path / 'out.pth').exists()
