# DenseCL on the demo images, small enough for a CPU: ResNet-18 from scratch, 112 px crops, batch 16,
# 300 iterations (a step is ~2 CPU-seconds: ~6 min on 2 idle cores). The paper's recipe is
# densecl_r50_8xb32-coslr-200e_in1k.py; this config only shrinks it. mmpretrain scope; the freesolo_mmdet plugin is
# not needed.
#   python tools/make_demo_data.py                       # once: data/demo/train (300 images)
#   mim train mmpretrain configs/densecl/densecl_r18_demo.py --work-dir work_dirs/densecl_demo
#   python tools/export_backbone.py work_dirs/densecl_demo/iter_300.pth work_dirs/densecl_demo/backbone.pth
# Fewer or more iterations: change the schedule with them, e.g.
#   --cfg-options train_cfg.max_iters=100 param_scheduler.0.T_max=100 param_scheduler.0.end=100
#                 default_hooks.checkpoint.interval=100
# The exported weights load into mmdet's `ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=...))`.
_base_ = './densecl_r50_8xb32-coslr-200e_in1k.py'

max_iters = 300
crop_size = 112  # C5 grid 4x4 for the dense loss
batch_size = 16

model = dict(
    # 256 negatives: fewer than the 300 images, a multiple of the batch size
    queue_len=256,
    # key encoder EMA 0.99 (MoCo's 0.999 is for long schedules)
    momentum=0.01,
    backbone=dict(depth=18),
    neck=dict(in_channels=512, hid_channels=512))

view_pipeline = [
    dict(type='RandomResizedCrop', scale=crop_size, crop_ratio_range=(0.2, 1.), backend='pillow'),
    # hue=0, not 0.1: mmcv 2.1's adjust_hue raises OverflowError under numpy 2 for negative hue shifts
    dict(
        type='RandomApply',
        transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.)],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
    dict(type='RandomFlip', prob=0.5),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=2,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/demo/',
        data_prefix='train/',
        with_label=False,
        pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=0.03))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters)]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
