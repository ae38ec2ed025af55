# FreeSOLO stage 0: DenseCL pre-training of the backbone, the paper's recipe (ResNet-50, ImageNet-1k train
# images without labels, 200 epochs, 8 GPUs x 32 images, SGD lr 0.03, cosine). It is mmpretrain's own config,
# which produced the published weights (`densecl_r50` in configs/free_mask/free_mask_r50_densecl.py), with one
# fix for loading it through `mmpretrain::` (below).
# mmpretrain configs run in the `mmpretrain` scope; the freesolo_mmdet plugin is not needed here, but torchvision
# is (`import mmpretrain.models` imports it). Under numpy >= 2, mmcv 2.1's `adjust_hue` (ColorJitter, hue=0.1)
# raises OverflowError for negative shifts (`np.uint8(-14)`): use numpy < 2 or a patched mmcv for this recipe.
#
# Data: data/imagenet/train/<wnid>/*.JPEG (+ data/imagenet/meta/train.txt), see mmpretrain's ImageNet dataset.
# Run (8 GPUs; `mim` runs mmpretrain's tools/train.py):
#   mim train mmpretrain configs/densecl/densecl_r50_8xb32-coslr-200e_in1k.py --launcher pytorch --gpus 8
#   # or: bash .venv/lib/python3.11/site-packages/mmpretrain/.mim/tools/dist_train.sh \
#   #         configs/densecl/densecl_r50_8xb32-coslr-200e_in1k.py 8
# With another total batch size add `--auto-scale-lr` (base batch 256). On unlabeled COCO images instead of
# ImageNet: configs/densecl/densecl_r50_coco-unlabeled.py.
# Then export the backbone for mmdet (bare ResNet keys, momentum encoder/neck/queues dropped):
#   python tools/export_backbone.py work_dirs/densecl_r50_8xb32-coslr-200e_in1k/epoch_200.pth \
#       work_dirs/densecl_r50_in1k_backbone.pth
# and use it in mmdet with `init_cfg=dict(type='Pretrained', checkpoint=<that file>)` (no `prefix`).
_base_ = 'mmpretrain::densecl/densecl_resnet50_8xb32-coslr-200e_in1k.py'

# A config inherited through `mmpretrain::` tags every dict with `_scope_='mmpretrain'`; mmengine's Runner passes
# the collate_fn dict's keys to the function as keyword arguments, so `default_collate` fails on `_scope_`.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))
