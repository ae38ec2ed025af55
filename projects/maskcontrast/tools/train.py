"""Train MaskContrast with a plain loop (mmengine config, optimizer wrapper, scheduler, progress bar).

    python projects/maskcontrast/tools/train.py CONFIG [--work-dir DIR] [--resume] [--cfg-options k=v ...]

Run from the repository root (the config's paths are relative to it). Writes ``latest.pth``
(``{'state_dict', 'optimizer', 'scheduler', 'meta', 'log'}``, every
``train_cfg.checkpoint_interval`` steps and at the end, atomically) and ``train_log.json`` (losses
every ``train_cfg.log_interval`` steps) to the work dir. ``--resume`` continues from ``latest.pth``
and gives the same weights as an uninterrupted run: each epoch's order is drawn from
``(seed, epoch)`` and each item's augmentation from ``(seed, epoch, index)``.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.optim.scheduler import CosineAnnealingLR  # noqa: E402
from mmengine.runner import set_random_seed  # noqa: E402
from mmengine.utils import ProgressBar  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train MaskContrast on mask proposals')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where to write latest.pth and train_log.json')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. train_cfg.max_iters=50')
    parser.add_argument('--resume', action='store_true', help='continue from WORK_DIR/latest.pth if it exists')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar (logs only)')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: cuda when available)')
    return parser.parse_args(argv)


def load_config(path: str, cfg_options=None) -> Config:
    """The config (custom imports done) with overrides; a clear error for a wrong path."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'no such config: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    import projects.maskcontrast.maskcontrast  # noqa: F401
    return cfg


def check_pretrained(cfg: Config) -> None:
    """Fail early, with the fix, when the backbone's pretrained file is missing."""
    init = cfg.model.backbone.get('init_cfg') or {}
    ckpt = init.get('checkpoint') if isinstance(init, dict) else None
    if ckpt and '://' not in ckpt and not osp.isfile(ckpt):
        raise FileNotFoundError(
            f'pretrained backbone not found: {ckpt}. For the demo config create it with: python -c "from '
            'freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2 as c; '
            f"c('{ckpt}')\"")


def build_model(cfg: Config):
    """The model, initialised (pretrained backbone loaded; no key encoder yet)."""
    from mmdet.registry import MODELS
    check_pretrained(cfg)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> List[List[int]]:
    """Index batches of one epoch: a permutation drawn from ``(seed, epoch)``; the incomplete last
    batch is dropped, so every epoch has ``num_items // batch_size`` batches."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, num_items - batch_size + 1, batch_size)]


def save_checkpoint(path: str, state: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a kill never leaves half a file."""
    tmp = path + '.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: Config, work_dir: str, show_progress: bool = True, device: str = None,
          resume: bool = False) -> dict:
    """Run the loop of ``cfg.train_cfg``; returns the summary written to ``train_log.json``."""
    from mmdet.registry import DATASETS
    from projects.maskcontrast.maskcontrast import collate_two_views

    tc = cfg.train_cfg
    seed = tc.get('seed', 0)
    set_random_seed(seed)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    loader_cfg = cfg.train_dataloader
    batch_size = loader_cfg.batch_size
    if len(dataset) < batch_size:
        raise ValueError(f'{len(dataset)} images with proposals, fewer than one batch of {batch_size}')
    batches_per_epoch = len(dataset) // batch_size
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model = build_model(cfg).to(device)
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    model.init_key_encoder()  # after the optimizer: the frozen EMA copy is no optimizer parameter
    max_iters = tc.max_iters
    sched_cfg = dict(cfg.get('param_scheduler', {}) or {})
    sched = None
    if sched_cfg:
        if sched_cfg.pop('type', 'CosineAnnealingLR') != 'CosineAnnealingLR':
            raise ValueError('this loop supports param_scheduler type CosineAnnealingLR only')
        sched = CosineAnnealingLR(optim, T_max=max_iters, by_epoch=False, **sched_cfg)
    os.makedirs(work_dir, exist_ok=True)
    ckpt = osp.join(work_dir, 'latest.pth')
    log, step, elapsed = [], 0, 0.0
    if resume and osp.isfile(ckpt):
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if 'optimizer' not in state:
            raise ValueError(f'{ckpt} holds no optimizer state (written by an older version): cannot resume')
        model.load_state_dict(state['state_dict'])
        optim.load_state_dict(state['optimizer'])
        if sched is not None:
            sched.load_state_dict(state['scheduler'])
        log, step, elapsed = state['log'], state['meta']['iter'], state['meta']['wall_s']
        print(f'resumed from {ckpt} at iteration {step}', flush=True)
    elif resume:
        print(f'no {ckpt} to resume from: starting from iteration 0', flush=True)

    def checkpoint() -> None:
        save_checkpoint(ckpt, dict(
            state_dict=model.state_dict(), optimizer=optim.state_dict(),
            scheduler=sched.state_dict() if sched is not None else None, log=log,
            meta=dict(iter=step, config=cfg.filename, wall_s=round(elapsed + time.time() - start, 1))))

    start, running = time.time(), {}
    log_interval, ckpt_interval = tc.get('log_interval', 25), tc.get('checkpoint_interval', 50)
    bar = ProgressBar(max_iters) if show_progress and step < max_iters else None
    if bar is not None:
        bar.completed = step
    while step < max_iters:
        epoch = step // batches_per_epoch
        dataset.epoch = epoch
        batches = epoch_batches(len(dataset), batch_size, seed, epoch)[step % batches_per_epoch:]
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=loader_cfg.get('num_workers', 0),
                            collate_fn=collate_two_views)
        for batch in loader:
            losses = model.loss(**{k: v.to(device, non_blocking=True) for k, v in batch.items()})
            total = sum(losses.values())
            optim.update_params(total)
            model.momentum_update()
            if sched is not None:
                sched.step()
            step += 1
            for k, v in losses.items():
                running.setdefault(k, []).append(float(v.detach()))
            if step % log_interval == 0 or step == max_iters:
                entry = dict(iter=step, lr=max(optim.get_lr()['lr']),
                             time=round(elapsed + time.time() - start, 1),
                             **{k: round(sum(v) / len(v), 4) for k, v in running.items()})
                log.append(entry)
                running = {}
                if bar is None:
                    print(json.dumps(entry), flush=True)
            if bar is not None:
                bar.update()
            if step % ckpt_interval == 0 or step == max_iters:
                checkpoint()
            if step >= max_iters:
                break
    if bar is not None:
        print()
    wall = elapsed + time.time() - start
    summary = dict(config=cfg.filename, iters=step, wall_s=round(wall, 1), checkpoint=ckpt, log=log)
    with open(osp.join(work_dir, 'train_log.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    for entry in log:
        print(json.dumps(entry))
    print(f'saved {ckpt} after {step} iterations in {wall:.1f} s')
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or cfg.get('work_dir') or osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    train(cfg, work_dir, show_progress=not args.no_progress, device=args.device, resume=args.resume)


if __name__ == '__main__':
    main()
