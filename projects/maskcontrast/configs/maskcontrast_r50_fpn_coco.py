# MaskContrast at COCO scale on FreeSOLO proposals (GPU recipe; NOT run in this repository).
#
# Proposals: FreeSOLO's Free Masks of train2017 (or the self-trained model's pseudo labels):
#   python tools/generate_free_masks.py configs/free_mask/free_mask_r50_densecl.py \
#       --images data/coco/train2017 --out work_dirs/free_mask_r50_densecl/free_masks_train2017.json
# Train on 8 GPUs (8 x 8 images per step), evaluate (semantic classes = the 80 COCO categories + background, K = 81):
#   bash tools/dist_train.sh projects/maskcontrast/configs/maskcontrast_r50_fpn_coco.py 8
#   bash tools/dist_test.sh projects/maskcontrast/configs/maskcontrast_r50_fpn_coco.py \
#       work_dirs/maskcontrast_r50_fpn_coco/iter_60000.pth 8
# A GPU recipe sketch, not tuned and not the paper's schedule (the paper: PASCAL, DeepLab-v3 R50, MoCo v2
# init). It keeps the demo's FPN head and uses FreeSOLO's DenseCL R50 init (self-supervised, so the
# whole chain is unsupervised).
_base_ = './maskcontrast_mbv2_fpn_demo.py'

densecl_r50 = ('https://download.openmmlab.com/mmselfsup/1.x/densecl/'
               'densecl_resnet50_8xb32-coslr-200e_in1k/'
               'densecl_resnet50_8xb32-coslr-200e_in1k_20220825-3078723b.pth')
work_dir = 'work_dirs/maskcontrast_r50_fpn_coco'
data_root = 'data/coco/'
max_iters = 60000

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),  # stride 8, 16, 32
        frozen_stages=1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),  # BN trains: statistics over all GPUs
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=densecl_r50, prefix='backbone.')),
    neck=dict(in_channels=[512, 1024, 2048], out_channels=256),
    head=dict(in_channels=256, feat_channels=128, embed_dims=32, num_convs=2,
              norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
    momentum=0.999,
    memory_size=128)

train_dataloader = dict(
    batch_size=8,  # per GPU: 64 images per step on 8 GPUs
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        img_dir=data_root + 'train2017',
        proposal_file='work_dirs/free_mask_r50_densecl/free_masks_train2017.json',
        min_score=0.0,
        transform=dict(crop_size=224, scale=(0.2, 1.0))))

val_dataset = dict(type='SemanticSegDataset', img_dir=data_root + 'val2017',
                   ann_file=data_root + 'annotations/instances_val2017.json', class_key='category_id', split='val')
probe_dataset = dict(type='SemanticSegDataset', img_dir=data_root + 'train2017',
                     ann_file=data_root + 'annotations/instances_train2017.json', class_key='category_id',
                     max_images=2000, split='probe_train')
val_dataloader = dict(batch_size=4, num_workers=4, persistent_workers=True, dataset=val_dataset)
test_dataloader = dict(batch_size=4, num_workers=4, persistent_workers=True,
                       dataset=dict(type='SplitConcatDataset', datasets=[val_dataset, probe_dataset]))

kmeans_metric = dict(type='KMeansMIoU', num_samples=1000000, seeds=(0, 1, 2, 3, 4), iters=100, n_init=3)
val_evaluator = kmeans_metric
test_evaluator = [kmeans_metric, dict(type='LinearProbeMIoU', num_samples=1000000, iters=2000, lr=0.01)]

train_cfg = dict(max_iters=max_iters, val_interval=10000)
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='SGD', lr=0.004 * 8, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters, eta_min_ratio=0.01, by_epoch=False, begin=0, end=max_iters)
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
find_unused_parameters = False  # ResNet freezes its stem when built, and every stage up to out_indices feeds the FPN
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=2000))
log_processor = dict(window_size=50)
