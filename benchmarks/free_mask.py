"""Free Mask cost: the generator (backbone + mask generation) against the bare backbone forward on
the same images, and peak memory over N and 2N images fed one batch at a time. Run by hand:

    python benchmarks/free_mask.py [--size 800] [--num-images 2] [--device cpu|cuda]

The model is ``configs/free_mask/free_mask_r50_densecl.py`` (ResNet-50, C5, the paper's settings)
with a random-init backbone (the cost does not depend on the weights, only on the number of masks,
which ``top_k`` caps). Images are random, short side ``--size``, 4:3 (800 -> 800x1066 -> a 25x34 C5
map, ~1.1k queries). Targets (issue 3): generator <= 1.10x the backbone; peak memory flat in the
number of images (the 2N/N ratio ~ 1). Each peak is measured in a fresh process, above the level
after building the model: ``torch.cuda.max_memory_allocated`` on GPU; on CPU peak RSS (``VmHWM``
after resetting it, Linux) with glibc's mmap threshold fixed at 128 KiB, so that freed tensors go
back to the OS and RSS follows live memory instead of the allocator's cache. The paper's filters
are switched off so that every one of the ``top_k`` masks is kept and encoded (random weights give
low maskness, which they would drop).
"""
import argparse
import os
import os.path as osp
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'free_mask', 'free_mask_r50_densecl.py')


def build_generator(device: str) -> torch.nn.Module:
    """The paper's Free Mask generator with a randomly initialised ResNet-50, in eval mode."""
    from freesolo_mmdet.free_mask.generator import FreeMaskGenerator  # noqa: F401 (registers it)
    from mmdet.registry import MODELS
    MMLogger.get_instance('free_mask_benchmark', log_level='WARNING')  # no per-weight init log
    init_default_scope('mmdet')
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.init_cfg = None
    # every top_k mask is kept, the most work for the upsampling after NMS (random weights and
    # images give low maskness, which the paper's filters would drop)
    cfg.model.update(min_score=None, sky_filter=None, width_filter=None)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device).eval()


def make_images(num: int, size: int, device: str) -> torch.Tensor:
    """(num, 3, size, 4/3 size) normalised random images, fixed seed."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(num, 3, size, size * 4 // 3, generator=generator).to(device)


def timed(fn, device: str) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_times(model, images: torch.Tensor, device: str, repeats: int) -> tuple:
    """Seconds per image of the backbone alone and of the generator, fastest of ``repeats`` passes
    over the images, the two interleaved (so that CPU load from elsewhere hits both alike)."""
    backbone_s, generator_s = [], []
    with torch.no_grad():
        model.predict(images[:1])  # warm-up
        for _ in range(repeats):
            backbone_s.append(sum(timed(lambda: model.backbone(image[None]), device) for image in images))
            generator_s.append(sum(timed(lambda: model.predict(image[None]), device) for image in images))
    return min(backbone_s) / len(images), min(generator_s) / len(images)


def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))


def reset_peak_rss() -> int:
    """Resets the process's peak RSS (Linux >= 4.0: ``clear_refs`` 5); returns the current RSS in bytes.
    Elsewhere the peak cannot be reset: returns the peak so far (``getrusage``), a coarser baseline."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _proc_status_kib('VmRSS') * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    try:
        return _proc_status_kib('VmHWM') * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_mib(num_images: int, size: int, batch_size: int, device: str) -> float:
    """Peak memory (MiB) above the level after building the model, over ``num_images`` images run
    ``batch_size`` at a time, masks encoded as COCO RLE and kept, as the tool does."""
    from freesolo_mmdet.free_mask.coco_writer import masks_to_coco_annotations
    model = build_generator(device)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    annotations = []
    with torch.no_grad():
        for start in range(0, num_images, batch_size):
            images = make_images(min(batch_size, num_images - start), size, device)
            for k, result in enumerate(model.predict(images)):
                annotations += masks_to_coco_annotations(result.masks, result.scores, start + k)
    peak = torch.cuda.max_memory_allocated() if device.startswith('cuda') else peak_rss()
    return (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=800, help='short side of the images')
    parser.add_argument('--num-images', type=int, default=2, help='images per timing pass; N of the memory test')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward in the memory test')
    parser.add_argument('--repeats', type=int, default=2, help='timing passes; the fastest counts')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: CUDA is not available')

    model = build_generator(args.device)
    images = make_images(args.num_images, args.size, args.device)
    with torch.no_grad():
        feat = model.backbone(images[:1])[-1]
        num_masks = len(model.predict(images[:1])[0])
    backbone_s, generator_s = compare_times(model, images, args.device, args.repeats)
    del model, images
    print(f'device {args.device}, {torch.get_num_threads()} threads; R50 (random init), '
          f'{args.num_images} images of {args.size}x{args.size * 4 // 3}, C5 map {tuple(feat.shape[-2:])}, '
          f'{num_masks} masks on image 1')
    print(f'backbone forward:          {1000 * backbone_s:8.1f} ms/image')
    print(f'generator (backbone + FM): {1000 * generator_s:8.1f} ms/image')
    print(f'ratio generator/backbone:  {generator_s / backbone_s:8.3f}  (target <= 1.10)')

    # glibc otherwise keeps freed large blocks in its heap (its mmap threshold grows at run time), so
    # peak RSS would measure allocator caching rather than live memory; read by the spawned processes
    os.environ.setdefault('MALLOC_MMAP_THRESHOLD_', str(128 * 1024))
    peaks = []
    for num in (args.num_images, 2 * args.num_images):
        with ProcessPoolExecutor(1, mp_context=get_context('spawn')) as pool:  # fresh process: clean peak
            peaks.append(pool.submit(peak_memory_mib, num, args.size, args.batch_size, args.device).result())
    kind = 'CUDA max allocated' if args.device.startswith('cuda') else 'max RSS'
    print(f'peak memory ({kind}, above the built model), batch {args.batch_size}: '
          f'{args.num_images} images {peaks[0]:.0f} MiB, {2 * args.num_images} images {peaks[1]:.0f} MiB, '
          f'ratio {peaks[1] / peaks[0] if peaks[0] > 0 else float("nan"):.3f}  (target ~1)')


if __name__ == '__main__':
    main()
