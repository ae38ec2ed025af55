# The demo training config without the moving average of the weights: every checkpoint holds the last iteration's
# weights, as in the spec's recipe. The pipeline's default before 2026-12-02 (README, "Results table").
#   python tools/freesolo_pipeline.py --images DIR --work-dir W \
#       --train-config configs/demo/freesolo_light_demo_last_weights.py
_base_ = './freesolo_light_demo.py'

custom_hooks = [dict(type='ChannelsLastHook'), dict(type='KeepFreedMemoryHook')]
