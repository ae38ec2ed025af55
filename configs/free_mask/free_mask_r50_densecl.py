# Free Mask (FreeSOLO stage 1) with the paper's ablation backbone: ResNet-50 pre-trained by DenseCL
# (ImageNet, 200 epochs), the only DenseCL weights still public. No training: run
#   python tools/generate_free_masks.py configs/free_mask/free_mask_r50_densecl.py \
#       --images data/my_images --out work_dirs/free_masks.json
# Offline, download the checkpoint once and pass
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/densecl_resnet50_...pth
default_scope = 'mmdet'
custom_imports = dict(imports=['freesolo_mmdet'], allow_failed_imports=False)

densecl_r50 = ('https://download.openmmlab.com/mmselfsup/1.x/densecl/'
               'densecl_resnet50_8xb32-coslr-200e_in1k/'
               'densecl_resnet50_8xb32-coslr-200e_in1k_20220825-3078723b.pth')

model = dict(
    type='FreeMaskGenerator',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # ImageNet, RGB
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        # padding only aligns a batch; the generator crops each image's valid feature cells
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),  # C5, stride 32, 2048 channels
        frozen_stages=4,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=densecl_r50, prefix='backbone.')),
    feature_level=-1,
    query_scales=(1.0, 0.5, 0.25),
    tau=0.5,
    nms_kernel='gaussian',
    nms_sigma=2.0,
    top_k=20,
    mask_thr=0.5,
    sky_filter=0.2,
    width_filter=0.95,
    min_score=0.7,
    emb_dim=128,
    emb_mode='linear')

# LoadAnyImageFromFile (Pillow, as every config of the project) reads any image whatever its extension and
# raises on truncated files (OpenCV silently returns a partly grey image), so the tool can skip and report them
test_pipeline = [
    dict(type='LoadAnyImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]

# read by tools/generate_free_masks.py
free_mask_cfg = dict(batch_size=2, num_workers=2, chunk_size=500)
