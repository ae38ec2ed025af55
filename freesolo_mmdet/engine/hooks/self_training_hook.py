"""Self-training in one run (spec section 3): at chosen points the model labels the training images
and training continues on its own masks."""
import copy
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.dist import broadcast_object_list, gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.loops import _InfiniteDataloaderIterator

from freesolo_mmdet.engine.pseudo_labels import collect_pseudo_label_coco, find_test_pipeline, predict_pseudo_labels
from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic
from mmdet.registry import HOOKS

__all__ = ['SelfTrainingHook']

#: key of the hook's state in ``checkpoint['meta']``
META_KEY = 'self_training'


@HOOKS.register_module()
class SelfTrainingHook(Hook):
    """Replace the training labels by the model's own predictions during training.

    After ``refresh_at`` iterations (or epochs), or every ``interval``, round ``r`` begins: the
    model predicts masks on the training images (those of the train dataset when training started),
    :func:`~freesolo_mmdet.engine.pseudo_labels.select_pseudo_labels` keeps the confident ones, and
    ``out_dir/round{r}.json`` (plus ``round{r}.report.json``) becomes the train dataset's
    ``ann_file``. Training continues from the current weights (the authors' release instead
    retrains from the initial weights: do that with ``tools/gen_pseudo_labels.py`` and a second
    run, see its docstring).

    Distributed: each rank predicts every ``world_size``-th image, rank 0 gathers the results and
    writes the json (atomically), and the broadcast of its path lets no rank read it early.
    ``out_dir`` must be on a file system that all ranks see (as ``work_dir`` usually is).

    Reloading: every rank rebuilds the train dataloader from the ``train_dataloader`` config the
    runner was built with, ``ann_file`` replaced (wrappers such as ``RepeatDataset`` are looked
    through), exactly as the runner built it (dataset, sampler, batch sampler, workers, seed);
    the old loader and its workers are released. An ``IterBasedTrainLoop`` gets a new infinite
    iterator over it; an ``EpochBasedTrainLoop`` uses it from the next epoch (its iteration-based
    schedules keep the length of the first dataset).

    Resuming: checkpoints store ``{'round', 'ann_file'}`` in ``meta['self_training']``; a resumed
    run trains on that file and does not redo finished rounds. A refresh runs before
    ``CheckpointHook`` (priority), so a checkpoint saved at a refresh point already holds it.
    ``load_from`` without ``resume`` restores nothing: the config's labels are used.

    Args:
        refresh_at (Sequence[int]): iterations (epochs if ``by_epoch``) after which to refresh.
        interval (int, optional): refresh every ``interval`` iterations (epochs) instead.
        by_epoch (bool): count epochs rather than iterations. Defaults to False.
        score_thr (float): minimum score of a pseudo label. Defaults to 0.3.
        max_per_img (int): at most this many pseudo labels per image. Defaults to 20.
        max_width (float, optional): drop masks whose box is wider than this fraction of the
            image width; None = off. Defaults to 0.95.
        pipeline (list[dict], optional): test pipeline for the prediction; default: the config's
            (:func:`~freesolo_mmdet.engine.pseudo_labels.find_test_pipeline`).
        batch_size (int): images per forward pass. Defaults to 1.
        num_workers (int): data loading processes for the prediction. Defaults to 0.
        out_dir (str, optional): where the round files go; default ``work_dir/self_training``.
    """

    priority = 'NORMAL'  # runs before CheckpointHook (VERY_LOW) in the same after_train_iter

    def __init__(self,
                 refresh_at: Sequence[int] = (),
                 interval: Optional[int] = None,
                 by_epoch: bool = False,
                 score_thr: float = 0.3,
                 max_per_img: int = 20,
                 max_width: Optional[float] = 0.95,
                 pipeline: Optional[List[dict]] = None,
                 batch_size: int = 1,
                 num_workers: int = 0,
                 out_dir: Optional[str] = None) -> None:
        if bool(refresh_at) == (interval is not None):
            raise ValueError('SelfTrainingHook needs either refresh_at or interval, not both')
        if interval is not None and interval <= 0 or any(point <= 0 for point in refresh_at):
            raise ValueError(f'refresh points must be positive, got refresh_at={refresh_at}, interval={interval}')
        self.refresh_at = sorted(refresh_at)
        self.interval = interval
        self.by_epoch = by_epoch
        self.select_cfg = dict(score_thr=score_thr, max_per_img=max_per_img, max_width=max_width)
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.out_dir = out_dir
        self.round = 0
        self.ann_file: Optional[str] = None
        self.images: Optional[List[dict]] = None

    def num_due(self, progress: int) -> int:
        """Number of refreshes scheduled at or before ``progress`` iterations (epochs)."""
        if self.interval is not None:
            return progress // self.interval
        return sum(point <= progress for point in self.refresh_at)

    def before_train(self, runner) -> None:
        self._remember_images(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.num_due(runner.iter + 1) > self.round:
            self.refresh(runner)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.num_due(runner.epoch + 1) > self.round:
            self.refresh(runner)

    def refresh(self, runner) -> None:
        """Predict, write ``round{r+1}.json`` (rank 0) and train on it (all ranks)."""
        rank, world_size = get_dist_info()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        pipeline = self.pipeline if self.pipeline is not None else find_test_pipeline(runner.cfg)
        entries = predict_pseudo_labels(model, self.images[rank::world_size], pipeline, **self.select_cfg,
                                        batch_size=self.batch_size, num_workers=self.num_workers)
        parts = gather_object(entries, dst=0)
        summary = [None]
        if rank == 0:
            coco, report = collect_pseudo_label_coco([entry for part in parts for entry in part])
            out_dir = osp.abspath(self.out_dir or osp.join(runner.work_dir, 'self_training'))
            ann_file = osp.join(out_dir, f'round{self.round + 1}.json')
            dump_json_atomic(report, osp.join(out_dir, f'round{self.round + 1}.report.json'))
            dump_json_atomic(coco, ann_file)
            summary = [dict(ann_file=ann_file, **{k: v for k, v in report.items() if k.startswith('num_')})]
        broadcast_object_list(summary)  # returns on every rank once rank 0 has written the file
        summary = summary[0]
        if summary['num_annotations'] == 0:
            raise RuntimeError(f'self-training round {self.round + 1}: no prediction passed the filters '
                               f'{self.select_cfg} on any of the {summary["num_images"]} training images')
        runner.logger.info(f'self-training round {self.round + 1}: {summary["num_annotations"]} masks on '
                           f'{summary["num_images_with_masks"]} of {summary["num_images"]} images '
                           f'({summary["num_skipped"]} unreadable) -> {summary["ann_file"]}')
        self.round += 1
        self.ann_file = summary['ann_file']
        self._train_on(runner, self.ann_file)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[META_KEY] = dict(round=self.round, ann_file=self.ann_file)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get(META_KEY)
        if not runner._resume or not state or state['round'] == 0:
            return
        if not osp.isfile(state['ann_file']):
            raise FileNotFoundError(f'the resumed checkpoint trained on self-training round {state["round"]} '
                                    f'labels {state["ann_file"]}, which no longer exist')
        self._remember_images(runner)  # the original images, before the dataset changes
        self.round, self.ann_file = state['round'], state['ann_file']
        runner.logger.info(f'self-training: resuming after round {self.round} on {self.ann_file}')
        self._train_on(runner, self.ann_file)

    def _remember_images(self, runner) -> None:
        """The images to label: those of the train dataset the run started with."""
        if self.images is not None:
            return
        dataset = runner.train_dataloader.dataset
        while not hasattr(dataset, 'ann_file') and hasattr(dataset, 'dataset'):
            dataset = dataset.dataset
        if not hasattr(dataset, 'ann_file'):
            raise TypeError(f'SelfTrainingHook needs a COCO-style train dataset, got {type(dataset).__name__}')
        prefix = dataset.data_prefix.get('img', '')
        self.images = []
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            path = info['img_path']  # = join(prefix, file_name)
            file_name = path[len(prefix):].lstrip('/') if prefix and path.startswith(prefix) else path
            self.images.append(dict(index=index, id=info['img_id'], file_name=file_name, path=path))

    @staticmethod
    def _train_on(runner, ann_file: str) -> None:
        """Rebuild the train dataloader with the dataset reading ``ann_file``."""
        loader_cfg = runner._train_dataloader  # the config the train loop's dataloader was built from
        if not isinstance(loader_cfg, dict):
            raise TypeError('SelfTrainingHook rebuilds the train dataloader from its config: build the '
                            f'runner with train_dataloader as a dict, not a {type(loader_cfg).__name__}')
        loader_cfg = copy.deepcopy(loader_cfg)
        dataset_cfg = loader_cfg['dataset']
        while 'ann_file' not in dataset_cfg and isinstance(dataset_cfg.get('dataset'), dict):
            dataset_cfg = dataset_cfg['dataset']
        dataset_cfg['ann_file'] = ann_file  # absolute: not joined with data_root
        loop = runner.train_loop
        loop.dataloader = runner.build_dataloader(
            loader_cfg, seed=runner.seed, diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop
            loop.dataloader_iterator = _InfiniteDataloaderIterator(loop.dataloader)
