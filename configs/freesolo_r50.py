# FreeSOLO stage 2 (self-supervised SOLO), the authors' release recipe with a ResNet-50 initialised
# from DenseCL (spec section 2). A class-agnostic SOLOv2 trained on Free Masks. The README's section
# "Reproducing FreeSOLO on COCO (8 GPUs)" runs it (tests/test_coco_recipe.py runs that section):
#   1. Free Masks of train2017 + unlabeled2017 in one json, over a folder that links both
#      (file_names are then train2017/... and unlabeled2017/..., relative to data_prefix below):
#        mkdir -p data/coco/train_unlabeled && ln -s ../train2017 ../unlabeled2017 data/coco/train_unlabeled/
#        bash tools/dist_generate_free_masks.sh 8 configs/free_mask/free_mask_r50_densecl.py \
#            --images data/coco/train_unlabeled --out data/coco/annotations/free_masks_train.json
#   2. Training, 16 images per iteration = 8 GPUs x 2 (batch_size below is per GPU):
#        bash tools/dist_train.sh configs/freesolo_r50.py 8
#      (or mim train mmdet configs/freesolo_r50.py --launcher pytorch --gpus 8)
#      With another number of GPUs keep 16 images per iteration (e.g. 4 GPUs: batch_size=4) or pass
#      --auto-scale-lr, which scales lr by (total batch / 16).
#   3. Self-training: pseudo labels in the Free Mask format, then the same recipe on them, from DenseCL:
#        python tools/gen_pseudo_labels.py configs/freesolo_r50.py $(cat work_dirs/freesolo_r50/last_checkpoint) \
#            --images data/coco/train_unlabeled --out data/coco/annotations/pseudo_labels_round1.json
#        bash tools/dist_train.sh configs/freesolo_r50.py 8 --work-dir work_dirs/freesolo_r50_round2 \
#            --cfg-options train_dataloader.dataset.ann_file=annotations/pseudo_labels_round1.json
#   4. Evaluation: class-agnostic mask/box AP on COCO val2017 (ClassAgnosticCocoMetric):
#        bash tools/dist_test.sh configs/freesolo_r50.py $(cat work_dirs/freesolo_r50_round2/last_checkpoint) 8
# Offline: download the DenseCL checkpoint once and pass
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/densecl_resnet50_...pth
_base_ = 'mmdet::solov2/solov2_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['freesolo_mmdet'], allow_failed_imports=False)

densecl_r50 = ('https://download.openmmlab.com/mmselfsup/1.x/densecl/'
               'densecl_resnet50_8xb32-coslr-200e_in1k/'
               'densecl_resnet50_8xb32-coslr-200e_in1k_20220825-3078723b.pth')

model = dict(
    data_preprocessor=dict(
        type='FreeSOLODataPreprocessor',  # also computes the colour similarity (pairwise loss)
        mean=[123.675, 116.28, 103.53],  # ImageNet, RGB
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32,
        mask_stride=4,
        bottom_pixels_removed=10,
        # each batch doubled: weak views + strong views (colour jitter, grayscale, blur, 3 erasings)
        # with objects copy-pasted from another image's weak view; same geometry in both views; the
        # augment takes mean, std and channel order from this preprocessor
        batch_augments=[dict(type='TwoViewAugment')]),
    backbone=dict(
        depth=50,
        frozen_stages=-1,  # all stages trainable
        norm_cfg=dict(type='BN', requires_grad=False),  # BN frozen
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=densecl_r50, prefix='backbone.')),
    mask_head=dict(
        type='FreeSOLOHead',
        num_classes=1,
        loss_mask=None,  # SOLOv2's dice loss is replaced by the three losses below
        loss_mask_maxproj=dict(type='MaxProjLoss', loss_weight=1.0),
        loss_mask_avgproj=dict(type='AvgProjLoss', loss_weight=0.1),
        loss_mask_pairwise=dict(
            type='PairwiseAffinityLoss',
            loss_weight=1.0,
            color_threshold=0.3,
            kernel_size=3,
            dilation=2,
            warmup_iters=1000),
        loss_emb_weight=1.0,  # beta; the release multiplies this loss by 0 (spec section 5.2)
        emb_channels=128,
        with_emb=True))
# An implementation choice, not a change of the method: the runner's train() folds each frozen BN of the backbone
# into the convolution before it on the fly (mmengine's efficient_conv_bn_eval: conv(x, w * s) + b instead of
# BN(conv(x, w))), the same outputs and gradients up to rounding without the BN passes over the activations.
# ResNet-50 forward + backward, 4 images of 800x1216, CPU, 1 thread: python benchmarks/backbone_step.py (README).
efficient_conv_bn_eval = ['backbone']

# data: the COCO train2017 + unlabeled2017 images with their Free Masks, one json over the folder that
# links both (step 1 above); round 2 replaces ann_file by the pseudo labels
dataset_type = 'CoarseMaskCocoDataset'
data_root = 'data/coco/'
train_pipeline = [
    dict(type='LoadAnyImageFromFile', backend_args=None),
    dict(type='LoadCoarseMaskAnnotations', with_bbox=True, with_mask=True, with_score=True, with_emb=True),
    dict(
        type='RandomChoiceResize',  # short side 640-800
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackCoarseMaskInputs')
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/free_masks_train.json',
        data_prefix=dict(img='train_unlabeled/'),
        emb_dim=128,
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=None))

# val: COCO val2017 images, class-agnostic AP against all 80 categories merged into one
# (the stock CocoDataset only lists the images here; the metric reads the ground truth itself)
test_pipeline = [
    dict(type='LoadAnyImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='ClassAgnosticCocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['segm', 'bbox'])
test_evaluator = val_evaluator

# schedule: SGD lr 0.001 (10x below SOLOv2), linear warm-up over 1000 iterations from 0.01, then
# constant; 30k iterations of 16 images; no gradient clipping
max_iters = 30000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=1000)]
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(type='RankZeroLoggerHook', interval=50),  # mmengine's LoggerHook, one writer of the test json
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
