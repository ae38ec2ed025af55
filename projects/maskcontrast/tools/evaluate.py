"""K-means (Hungarian-matched) mIoU and linear-probe mIoU of MaskContrast embeddings or of the
backbone's features, on the semantic ground truth named by the config's ``eval_cfg``.

    # before training: the pretrained backbone's own levels and the model at init
    python projects/maskcontrast/tools/evaluate.py CONFIG --checkpoint none \
        --sources backbone.0 backbone.1 backbone.2 backbone.cat model
    # after training
    python projects/maskcontrast/tools/evaluate.py CONFIG --checkpoint work_dirs/maskcontrast_demo/latest.pth

Sources: ``model`` (unit embeddings), ``backbone.<i>`` (level i of the backbone's out_indices) and
``backbone.cat`` (all levels, normalised and concatenated). Writes a json (``--out``) and, with
``--show-dir``, pictures of the first val images: image | ground truth | each source's K-means
segmentation (clusters coloured by their Hungarian-matched class), plus ``overview.jpg``.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.runner import set_random_seed  # noqa: E402

from train import build_model, load_config  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate MaskContrast embeddings (K-means, linear probe)')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', required=True, help='a tools/train.py checkpoint, or "none" (model at init)')
    parser.add_argument('--sources', nargs='+', default=['model'], help='feature sources to evaluate')
    parser.add_argument('--no-probe', action='store_true', help='K-means only')
    parser.add_argument('--out', help='json with the results (default: WORK_DIR/eval_<checkpoint>.json)')
    parser.add_argument('--show-dir', help='write pictures of the K-means segmentation of the first val images')
    parser.add_argument('--show-num', type=int, default=6, help='how many val images --show-dir draws')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: cuda when available)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the model init (for --checkpoint none)')
    return parser.parse_args(argv)


def load_checkpoint(model, path: str) -> None:
    """Load a tools/train.py checkpoint into ``model`` (the key encoder's copy is not needed)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    state = torch.load(path, map_location='cpu', weights_only=True)
    state = state.get('state_dict', state)
    state = {k: v for k, v in state.items() if not k.startswith('key_encoder.')}
    own = {k for k in model.state_dict() if not k.startswith('key_encoder.')}
    missing, unexpected = own - set(state), set(state) - own
    if missing or unexpected:
        raise ValueError(f'{path} does not fit the config: missing {sorted(missing)[:5]}, '
                         f'unexpected {sorted(unexpected)[:5]}')
    model.load_state_dict(state, strict=False)


def show(show_dir: str, val_set, shown: dict) -> None:
    """Write ``<show_dir>/<image>.png`` per shown val image and ``overview.jpg`` with all of them."""
    import cv2
    import numpy as np
    from projects.maskcontrast.maskcontrast import read_rgb
    from projects.maskcontrast.maskcontrast.visualization import segmentation_panel
    os.makedirs(show_dir, exist_ok=True)
    panels = []
    for i, predictions in sorted(shown.items()):
        info = val_set.images[i]
        panel = segmentation_panel(read_rgb(osp.join(val_set.img_dir, info['file_name'])), val_set.label_map(i),
                                   predictions, val_set.classes)
        cv2.imwrite(osp.join(show_dir, osp.splitext(osp.basename(info['file_name']))[0] + '.png'), panel[..., ::-1])
        panels.append(panel)
    if panels:
        width = max(p.shape[1] for p in panels)
        overview = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255)
                                   for p in panels])
        cv2.imwrite(osp.join(show_dir, 'overview.jpg'), overview[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f'wrote {len(panels)} pictures and overview.jpg to {show_dir}')


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    from mmdet.registry import DATASETS
    from projects.maskcontrast.maskcontrast import (extract_features, feature_extractor, kmeans_miou,
                                                    kmeans_segmentation, linear_probe_miou)
    set_random_seed(args.seed)
    start = time.time()
    model = build_model(cfg)
    if args.checkpoint.lower() != 'none':
        load_checkpoint(model, args.checkpoint)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model.to(device).eval()
    ec = cfg.eval_cfg
    val_set = DATASETS.build(ec.val_dataset)
    probe_set = None if args.no_probe else DATASETS.build(ec.probe_dataset)
    results = dict(config=args.config, checkpoint=args.checkpoint, classes=val_set.classes, sources={})
    shown = {}  # val index -> {title: (H, W) class map}
    for source in args.sources:
        fn = feature_extractor(model, source, device)
        t0 = time.time()
        print(f'[{source}] features of {len(val_set)} val images')
        val_feats, val_labels = extract_features(fn, val_set)
        res = dict(channels=int(val_feats[0].shape[0]),
                   kmeans=kmeans_miou(val_feats, val_labels, val_set.num_classes, return_fit=True, **ec.kmeans))
        fit = res['kmeans'].pop('fit')
        for i in range(min(args.show_num, len(val_set)) if args.show_dir else 0):
            shown.setdefault(i, {})[f'{source} K-means'] = kmeans_segmentation(
                val_feats[i], tuple(val_labels[i].shape), fit['centers'], fit['mapping']).numpy()
        print(f'[{source}] K-means mIoU {100 * res["kmeans"]["miou"]:.1f} +- {100 * res["kmeans"]["miou_std"]:.1f}')
        if probe_set is not None:
            print(f'[{source}] features of {len(probe_set)} probe-training images')
            train_feats, train_labels = extract_features(fn, probe_set)
            res['probe'] = linear_probe_miou(train_feats, train_labels, val_feats, val_labels, val_set.num_classes,
                                             **ec.probe)
            print(f'[{source}] linear probe mIoU {100 * res["probe"]["miou"]:.1f}')
            del train_feats, train_labels
        res['wall_s'] = round(time.time() - t0, 1)
        results['sources'][source] = res
    results['wall_s'] = round(time.time() - start, 1)
    print(f'\n{"source":<14}{"ch":>5}{"K-means mIoU":>18}{"probe mIoU":>12}   '
          f'per-class K-means IoU ({", ".join(val_set.classes)})')
    for source, res in results['sources'].items():
        km = res['kmeans']
        probe = f'{100 * res["probe"]["miou"]:.1f}' if 'probe' in res else '-'
        ious = ' '.join(f'{100 * v:.0f}' for v in km['ious'])
        print(f'{source:<14}{res["channels"]:>5}{100 * km["miou"]:>11.1f} +- {100 * km["miou_std"]:<4.1f}'
              f'{probe:>12}   {ious}')
    if args.show_dir:
        show(args.show_dir, val_set, shown)
    out = args.out or osp.join(cfg.get('work_dir', 'work_dirs/maskcontrast'),
                               f'eval_{osp.splitext(osp.basename(args.checkpoint))[0]}.json')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(results, f, indent=1)
    print(f'wrote {out} ({results["wall_s"]:.0f} s)')
    return results


if __name__ == '__main__':
    main()
