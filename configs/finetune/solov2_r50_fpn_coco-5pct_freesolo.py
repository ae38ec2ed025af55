# SOLOv2 R50-FPN fine-tuned on 5% of COCO train2017 masks, initialised from a FreeSOLO model
# (backbone, FPN and SOLOv2 head; the one-class category conv and the embedding conv do not fit the
# 80-class head and are skipped with a warning). The DenseCL-init config beside this one is the baseline.
#
#   bash tools/dist_train.sh configs/finetune/solov2_r50_fpn_coco-5pct_freesolo.py 8 \
#       --cfg-options load_from=work_dirs/freesolo_r50/iter_30000.pth
_base_ = './solov2_r50_fpn_coco-5pct_densecl.py'

model = dict(backbone=dict(init_cfg=None))
load_from = 'work_dirs/freesolo_r50/iter_30000.pth'  # a FreeSOLO checkpoint (configs/freesolo_r50.py)
