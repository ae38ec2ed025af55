# FreeSOLO with ResNet-101, the backbone of the paper's main table (spec section 2).
# No DenseCL ResNet-101 weights are public (the authors' links are dead; OpenMMLab hosts only R50), so
# there is no default init: pre-train one (e.g. DenseCL with mmpretrain) and pass it, keys prefixed
# `backbone.` as in mmpretrain checkpoints:
#   mim train mmdet configs/freesolo_r101.py --launcher pytorch --gpus 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=/path/to/densecl_resnet101.pth
# Make the Free Masks with the same R101 (configs/free_mask/free_mask_r50_densecl.py with
# model.backbone.depth=101 and the same checkpoint). Data, schedule and the other steps are those of
# configs/freesolo_r50.py (the README's COCO recipe with this config and the R101 checkpoint).
_base_ = './freesolo_r50.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='REPLACE/with/densecl_resnet101.pth',
                      prefix='backbone.')))
