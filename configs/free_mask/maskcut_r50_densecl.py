# MaskCut (CutLER, Wang et al. CVPR 2023) as an alternative to Free Mask for stage 1: the same DenseCL ResNet-50,
# preprocessing, test pipeline and tool settings as free_mask_r50_densecl.py, only the generator differs. Run
#   python tools/generate_free_masks.py configs/free_mask/maskcut_r50_densecl.py \
#       --images data/my_images --out work_dirs/maskcut_masks.json
# CutLER cuts DINO ViT-B/8 keys (60x60 patches at 480 px, tau 0.15); here the graph is the C5 map (stride 32),
# whose post-ReLU features are all non-negative, so any two cells have a larger cosine than ViT keys would.
# tau 0.15 is CutLER's value, NOT calibrated for DenseCL C5 (the weights were not at hand): the demo's MobileNetV2
# needed 0.7 (configs/demo/maskcut_demo.py). Check the cosines of a few images' cells first and set tau so that
# the graph links only the closest pairs, e.g. --cfg-options model.tau=0.6.
_base_ = './free_mask_r50_densecl.py'

model = dict(  # MaskCutGenerator's defaults: 3 objects per image, a side holding >= 3 of the 4 corner cells is
    # taken for background, bilinear refinement checked at IoU 0.5, 128-d embeddings
    _delete_=True,  # none of Free Mask's query / NMS settings apply
    type='MaskCutGenerator',
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    tau=0.15)  # see above: uncalibrated for this backbone
