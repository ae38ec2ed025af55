"""FreeSOLO as functions (as mmdet's ``apis``): each stage of the method takes and returns paths,
configs and results; the tools are thin command lines over them. :mod:`.pipeline` runs them all."""
from .cli import run_main
from .config import InputError, check_cfg_options, check_custom_hooks, check_keys, check_writable, load_config
from .distributed import init_distributed, setup_cpu_distributed
from .free_mask import FREE_MASK_DEFAULTS, free_mask_options, generate_free_masks, report_path
from .inference import predict_masks
from .pipeline import evaluate_predictions, metrics_table, overlay_path, run_pipeline, write_overlays
from .stage_record import StageRecord, file_identity, image_fingerprint
from .training import (SELF_TRAINING_DEFAULTS, build_runner, derive_train_config, retarget_train_dataset,
                       self_training_options, stretch_schedulers, train)

__all__ = [
    'run_main', 'InputError', 'check_cfg_options', 'check_custom_hooks', 'check_keys', 'check_writable', 'load_config',
    'init_distributed', 'setup_cpu_distributed', 'FREE_MASK_DEFAULTS', 'free_mask_options',
    'generate_free_masks', 'report_path', 'predict_masks', 'evaluate_predictions', 'metrics_table',
    'overlay_path', 'run_pipeline', 'write_overlays', 'StageRecord', 'file_identity', 'image_fingerprint',
    'build_runner', 'derive_train_config', 'retarget_train_dataset', 'SELF_TRAINING_DEFAULTS',
    'self_training_options', 'stretch_schedulers', 'train'
]
