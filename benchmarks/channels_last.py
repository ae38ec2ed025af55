"""Time the demo's models in channels-last order against NCHW (``ChannelsLastHook``). Two modes:

    python benchmarks/channels_last.py [--batch 4] [--size 288] [--repeats 5] [--device cpu|cuda] [--threads N]
    python benchmarks/channels_last.py --labels work_dirs/demo/labels_round1.json [--images data/demo/train]
        [--iters 200] [--config CONFIG]

Synthetic (the first): (a) a training step of ``configs/demo/freesolo_light_demo.py`` (data preprocessor + loss +
backward) on a raw batch of ``--batch`` random images of ``--size`` px with 10 ellipse masks each
(``train_step.make_raw_batch``); (b) its inference (``mode='predict'``) on the same images; (c) the demo's Free
Mask generator (``configs/demo/free_mask_demo.py``) on such images at 544 px, the side its test pipeline gives
the demo's 320 px images. Random weights (no checkpoint needed); each pair of models starts from the same
weights, one of them converted by ``to_channels_last``; the six calls are timed in interleaved rounds.

In the runner (``--labels``, a Free Mask json such as the pipeline's ``labels_round1.json``): the pipeline's
round-1 training (mmengine's Runner, its data loader worker, optimizer and hooks) for ``--iters`` iterations,
switching the model between NCHW and channels-last every 10 iterations; the first 2 of each block are not
counted. Prints the median iteration of each format: the ratio the pipeline's training sees on this machine.

Both print channels-last / NCHW ratios. ``--threads``: torch's threads (default: torch's own, as the pipeline
runs).
"""
import argparse
import copy
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import REPO, interleaved_median_times  # noqa: E402
from runner_ab import alternating_iterations, print_medians  # noqa: E402
from train_step import make_raw_batch  # noqa: E402

import freesolo_mmdet  # noqa: E402,F401 (registers the modules)
from freesolo_mmdet.engine import to_channels_last  # noqa: E402
from freesolo_mmdet.engine.hooks.channels_last_hook import _inputs_channels_last  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402

TRAIN_CONFIG = osp.join(REPO, 'configs', 'demo', 'freesolo_light_demo.py')
FREE_MASK_CONFIG = osp.join(REPO, 'configs', 'demo', 'free_mask_demo.py')


def model_pair(config: str, device: str) -> tuple:
    """(NCHW model, channels-last copy) of ``config``'s model, random weights (no pretrained checkpoint)."""
    cfg = Config.fromfile(config).model
    cfg.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg).to(device)
    return model, to_channels_last(copy.deepcopy(model))


def in_runner(config: str, labels: str, images: str, iters: int) -> None:
    """The ``--labels`` mode: the pipeline's training config on ``labels``, NCHW (A) and channels-last (B)
    alternating every 10 iterations."""
    handles = []

    def set_memory_format(runner, channels_last: bool) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        if channels_last and not handles:
            handles.append(model.data_preprocessor.register_forward_hook(_inputs_channels_last))
        elif not channels_last and handles:
            handles.pop().remove()

    times = alternating_iterations(config, labels, images, iters, set_memory_format, keep_custom_hooks=False)
    print_medians(times, ('NCHW', 'ch-last'), f'{iters} iterations of {config} on {labels}, the format switched '
                  'every 10')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--batch', type=int, default=4, help='images per batch (the demo trains on 4)')
    parser.add_argument('--size', type=int, default=288, help='training/inference side (a multiple of 32)')
    parser.add_argument('--free-mask-size', type=int, default=544, help='Free Mask side (a multiple of 32)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument('--labels', help="a Free Mask json: time the pipeline's training in the runner instead")
    parser.add_argument('--images', default=osp.join(REPO, 'data', 'demo', 'train'), help='the images of --labels')
    parser.add_argument('--iters', type=int, default=200, help='--labels: training iterations')
    parser.add_argument('--config', default=TRAIN_CONFIG, help="--labels: the training config (default: the demo's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.labels:
        in_runner(args.config, args.labels, args.images, args.iters)
        return
    init_default_scope('mmdet')
    MessageHub.get_current_instance().update_info('iter', 10**6)  # past the pairwise loss's warm-up
    raw = make_raw_batch(args.batch, args.size, args.size, num_objects=10)
    raw_fm = make_raw_batch(args.batch, args.free_mask_size, args.free_mask_size, num_objects=1)
    train_nchw, train_cl = model_pair(TRAIN_CONFIG, args.device)
    fm_nchw, fm_cl = model_pair(FREE_MASK_CONFIG, args.device)

    def fresh(batch: dict = raw) -> dict:
        for model in (train_nchw, train_cl):
            model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        return dict(inputs=batch['inputs'], data_samples=copy.deepcopy(batch['data_samples']))

    def step(model, data: dict) -> None:
        model.train()
        batch = model.data_preprocessor(data, training=True)
        model.parse_losses(model(**batch, mode='loss'))[0].backward()

    def predict(model, data: dict) -> None:
        model.eval()
        with torch.no_grad():
            model.test_step(data)

    fns = dict(step_nchw=lambda data: step(train_nchw, data), step_cl=lambda data: step(train_cl, data),
               predict_nchw=lambda data: predict(train_nchw, data), predict_cl=lambda data: predict(train_cl, data),
               free_mask_nchw=lambda data: predict(fm_nchw, data), free_mask_cl=lambda data: predict(fm_cl, data))
    setups = {name: (lambda: fresh(raw_fm)) if name.startswith('free_mask') else fresh for name in fns}

    times = interleaved_median_times(fns, args.repeats, args.device, setups=setups)
    print(f'device {args.device}, {torch.get_num_threads()} threads; {args.batch} images; median of {args.repeats} '
          'interleaved rounds after a warm-up')
    print(f'{"":52s} {"NCHW":>9s} {"ch-last":>9s} {"ratio":>7s}')
    for key, name in (('step', f'(a) training step, {args.size} px'), ('predict', f'(b) inference, {args.size} px'),
                      ('free_mask', f'(c) Free Mask, {args.free_mask_size} px')):
        nchw, cl = times[f'{key}_nchw'], times[f'{key}_cl']
        print(f'{name:52s} {1000 * nchw:7.0f}ms {1000 * cl:7.0f}ms {cl / nchw:7.3f}')


if __name__ == '__main__':
    main()
