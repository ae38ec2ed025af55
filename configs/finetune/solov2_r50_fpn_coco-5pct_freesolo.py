# SOLOv2 R50-FPN fine-tuned on 5% of COCO train2017 masks, initialised from a FreeSOLO model
# (backbone, FPN and SOLOv2 head; the one-class category conv and the embedding conv do not fit the
# 80-class head and are skipped with a warning). The DenseCL-init config beside this one is the baseline.
# The README's COCO recipe passes the last checkpoint of the self-training round (mmengine writes its
# path to the work dir's last_checkpoint file):
#
#   bash tools/dist_train.sh configs/finetune/solov2_r50_fpn_coco-5pct_freesolo.py 8 \
#       --cfg-options load_from=$(cat work_dirs/freesolo_r50_round2/last_checkpoint)
_base_ = './solov2_r50_fpn_coco-5pct_densecl.py'

model = dict(backbone=dict(init_cfg=None))
# default: the end of configs/freesolo_r50.py's 30k-iteration schedule, round 2 (loading fails if it is missing)
load_from = 'work_dirs/freesolo_r50_round2/iter_30000.pth'
