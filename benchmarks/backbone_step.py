"""Time backbone + neck forward and backward of FreeSOLO's recipe against stock SOLOv2's on the same images: the
part of the full-step ratio (``train_step.py``) that comes from the spec's "all stages trainable" (FreeSOLO,
``frozen_stages=-1``, BN frozen) against SOLOv2's frozen stem and stage 1. Run by hand:

    OMP_NUM_THREADS=1 python benchmarks/backbone_step.py [--height 800 --width 1216] [--batch 4] [--repeats 2]
        [--device cpu|cuda]

Both models are built as in ``train_step.py`` (random weights, FreeSOLO with the stock weights); the input is
``--batch`` random images (4: the two views of a batch of 2), the loss the sum of the FPN outputs' means, timed in
interleaved rounds. A stem and stage 1 that train need their weight gradients and the gradient through stage 1,
at strides 2 and 4: work that SOLOv2's frozen stages skip. FreeSOLO's config folds its frozen BN into the backbone's
convolutions (``efficient_conv_bn_eval``); the same model without the fold is timed beside it, and so is the folded
model with its stem and stage 1 frozen as SOLOv2's: the difference between the two folded models is what the spec's
recipe costs, whatever this implementation does.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from head_step import interleaved_median_times  # noqa: E402
from train_step import add_size_arguments, build_models, parse_size_arguments  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_arguments(parser, batch=4)
    parser.set_defaults(repeats=2)
    args = parse_size_arguments(parser)
    solov2, freesolo = build_models(args.device)
    _, unfolded = build_models(args.device, conv_bn_eval=False)
    _, frozen = build_models(args.device, frozen_stages=1)
    inputs = torch.randn(args.batch, 3, args.height, args.width, device=args.device)

    def forward_backward(model) -> None:
        model.zero_grad(set_to_none=True)
        sum(feat.float().mean() for feat in model.extract_feat(inputs)).backward()

    times = interleaved_median_times(dict(solov2=lambda: forward_backward(solov2),
                                          freesolo=lambda: forward_backward(freesolo),
                                          unfolded=lambda: forward_backward(unfolded),
                                          frozen=lambda: forward_backward(frozen)), args.repeats, args.device)
    print(f'device {args.device}, {torch.get_num_threads()} threads; {args.batch} images of {args.height}x'
          f'{args.width}; median of {args.repeats} interleaved rounds after a warm-up')
    print(f'{"SOLOv2 backbone + neck, forward + backward (stem, stage 1 frozen)":70s} '
          f'{1000 * times["solov2"]:10.1f} ms')
    print(f'{"FreeSOLO backbone + neck, forward + backward (all stages train)":70s} '
          f'{1000 * times["freesolo"]:10.1f} ms')
    print(f'{"FreeSOLO, its frozen BN not folded into the convolutions":70s} '
          f'{1000 * times["unfolded"]:10.1f} ms')
    print(f'{"FreeSOLO, BN folded, stem and stage 1 frozen as in SOLOv2 (not the spec)":70s} '
          f'{1000 * times["frozen"]:10.1f} ms')
    print(f'{"ratio FreeSOLO / SOLOv2":70s} {times["freesolo"] / times["solov2"]:10.3f}')
    print(f'{"ratio FreeSOLO / FreeSOLO without the BN fold":70s} {times["freesolo"] / times["unfolded"]:10.3f}')
    print(f'{"ratio FreeSOLO with stem and stage 1 frozen / SOLOv2":70s} {times["frozen"] / times["solov2"]:10.3f}')
    print(f'{"extra time of the trainable stem and stage 1 (FreeSOLO - SOLOv2)":70s} '
          f'{1000 * (times["freesolo"] - times["solov2"]):10.1f} ms')
    print(f'{"the same, both folded (FreeSOLO - FreeSOLO with them frozen)":70s} '
          f'{1000 * (times["freesolo"] - times["frozen"]):10.1f} ms')


if __name__ == '__main__':
    main()
