# DenseCL pre-training (ResNet-50) on a folder of unlabeled images, e.g. COCO unlabeled2017 (123k images)
# or train2017 without its annotations, instead of ImageNet. Everything else is the paper's recipe
# (densecl_r50_8xb32-coslr-200e_in1k.py). 800 epochs is the DenseCL paper's COCO schedule [second-hand].
# Any folder works: every image below `data_root/data_prefix` is used (sub-folders included), no labels.
#   mim train mmpretrain configs/densecl/densecl_r50_coco-unlabeled.py --launcher pytorch --gpus 8
#   mim train mmpretrain configs/densecl/densecl_r50_coco-unlabeled.py --launcher pytorch --gpus 8 \
#       --cfg-options train_dataloader.dataset.data_root=data/my_images/ train_dataloader.dataset.data_prefix=''
# Then: python tools/export_backbone.py work_dirs/densecl_r50_coco-unlabeled/epoch_800.pth OUT.pth
_base_ = './densecl_r50_8xb32-coslr-200e_in1k.py'

max_epochs = 800
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/coco/',
        data_prefix='unlabeled2017/',
        with_label=False,
        pipeline={{_base_.train_pipeline}}))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs)]
train_cfg = dict(max_epochs=max_epochs)
