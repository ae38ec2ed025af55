"""Export the backbone of a self-supervised checkpoint (mmpretrain DenseCL, MoCo, ... or mmselfsup) for mmdet.

    python tools/export_backbone.py work_dirs/densecl_demo/iter_300.pth work_dirs/densecl_demo/backbone.pth
    python tools/export_backbone.py IN.pth OUT.pth --prefix backbone.

Keeps the tensors whose keys start with ``--prefix`` (the online encoder's backbone), without the prefix, and
drops the rest (DenseCL: momentum encoder ``encoder_k.*``, ``neck.*``, the queues; the optimizer and the
message hub). ``OUT`` is ``{'state_dict': ..., 'meta': {...}}``, which mmdet loads with no missing key through
``backbone=dict(type='ResNet', depth=..., init_cfg=dict(type='Pretrained', checkpoint=OUT))`` (no ``prefix``).
"""
import argparse
import os
import os.path as osp
import sys
from collections import Counter, OrderedDict
from typing import Optional, Sequence

import torch

import freesolo_mmdet  # noqa: F401  (lets torch's weights_only unpickler read mmengine checkpoints)

__all__ = ['export_backbone', 'main']


def export_backbone(in_path: str, out_path: str, prefix: str = 'backbone.') -> 'OrderedDict[str, torch.Tensor]':
    """Write the ``prefix``-ed tensors of ``in_path``'s state dict, prefix removed, to ``out_path``.

    Returns the exported state dict. Raises ``FileNotFoundError`` for a missing input and ``ValueError`` for an
    input without a state dict or without any ``prefix`` key (the message lists the prefixes it has).
    """
    if not osp.isfile(in_path):
        raise FileNotFoundError(f'checkpoint not found: {in_path}')
    try:
        checkpoint = torch.load(in_path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{in_path} is not a readable torch checkpoint: {e}') from e
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    tensors = {k: v for k, v in state_dict.items() if torch.is_tensor(v)} if isinstance(state_dict, dict) else {}
    if not tensors:
        raise ValueError(f'{in_path} holds no state dict of tensors')
    backbone = OrderedDict((k[len(prefix):], v) for k, v in tensors.items() if k.startswith(prefix))
    if not backbone:
        found = Counter(k.split('.', 1)[0] + ('.' if '.' in k else '') for k in tensors)
        listing = ', '.join(f'{p!r} ({n})' for p, n in found.most_common())
        raise ValueError(f'{in_path} has no key starting with {prefix!r}; its keys start with: {listing}. '
                         'Pass --prefix.')
    meta = dict(source=osp.abspath(in_path), prefix=prefix)
    if isinstance(checkpoint.get('meta'), dict):
        meta['source_meta'] = checkpoint['meta']
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    tmp_path = f'{out_path}.tmp'
    torch.save({'state_dict': backbone, 'meta': meta}, tmp_path)
    os.replace(tmp_path, out_path)
    return backbone


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Export the backbone of a self-supervised checkpoint for mmdet.')
    parser.add_argument('checkpoint', help='input checkpoint, e.g. an mmpretrain DenseCL iter_*.pth / epoch_*.pth')
    parser.add_argument('out', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.', help='key prefix of the backbone (default: backbone.)')
    args = parser.parse_args(argv)
    try:
        state_dict = export_backbone(args.checkpoint, args.out, args.prefix)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    num_params = sum(v.numel() for v in state_dict.values())
    print(f'wrote {len(state_dict)} tensors ({num_params / 1e6:.2f} M values) to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
