"""Self-training in one run (spec section 3): at chosen points the model labels the training images
and training continues on its own masks."""
import copy
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.dist import broadcast_object_list, gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict

from freesolo_mmdet.engine.pseudo_labels import collect_pseudo_label_coco, find_test_pipeline, predict_pseudo_labels
from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic
from mmdet.registry import HOOKS

__all__ = ['SelfTrainingHook']

#: key of the hook's state in ``checkpoint['meta']``
META_KEY = 'self_training'


def _dataset_leaves(dataset) -> list:
    """The annotated datasets under a (possibly wrapped) built dataset, depth first.

    ``ConcatDataset``-like wrappers are looked through via ``datasets``, ``RepeatDataset``,
    ``ClassBalancedDataset``, ``MultiImageMixDataset``... via ``dataset``; a leaf has an ``ann_file``.
    """
    if hasattr(dataset, 'datasets'):
        return [leaf for child in dataset.datasets for leaf in _dataset_leaves(child)]
    if hasattr(dataset, 'dataset'):
        return _dataset_leaves(dataset.dataset)
    if not hasattr(dataset, 'ann_file'):
        raise TypeError(f'SelfTrainingHook needs COCO-style train datasets, got {type(dataset).__name__}')
    return [dataset]


def _config_leaves(dataset_cfg: dict) -> List[dict]:
    """The leaf dataset configs of a train dataset config, in the order of :func:`_dataset_leaves`."""
    if not isinstance(dataset_cfg, dict):
        raise TypeError('SelfTrainingHook rebuilds the train datasets from their configs, got a built '
                        f'{type(dataset_cfg).__name__} in train_dataloader')
    if 'datasets' in dataset_cfg:
        return [leaf for child in dataset_cfg['datasets'] for leaf in _config_leaves(child)]
    if 'dataset' in dataset_cfg:
        return _config_leaves(dataset_cfg['dataset'])
    return [dataset_cfg]


@HOOKS.register_module()
class SelfTrainingHook(Hook):
    """Replace the training labels by the model's own predictions during training.

    After ``refresh_at`` iterations (or epochs), or every ``interval``, round ``r`` begins: the
    model predicts masks on the training images (those of the train dataset when training started),
    :func:`~freesolo_mmdet.engine.pseudo_labels.select_pseudo_labels` keeps the confident ones, and
    ``out_dir/round{r}.json`` (plus ``round{r}.report.json``) becomes the train dataset's
    ``ann_file``.

    Dataset wrappers: the annotated datasets (leaves: those with an ``ann_file``) are found through
    ``ConcatDataset`` (``datasets``) and ``RepeatDataset``, ``ClassBalancedDataset``,
    ``MultiImageMixDataset`` (``dataset``) at any depth. Each leaf's images are labelled once
    (not once per repeat) and get their own file: ``round{r}.json`` with one leaf,
    ``round{r}_dataset{k}.json`` (and ``.report.json``) for leaf ``k`` (depth-first order) with
    several, so image ids may collide across leaves. The wrappers are rebuilt around the new leaves
    (repeat factors of ``ClassBalancedDataset`` are recomputed on the new labels).

    Weights: by default training continues from the current weights. With ``reset_weights=True``
    every refresh also restores the weights the model had when training started (after its
    initialisation and ``load_from``) and empties the optimizer state (SGD momentum, Adam moments),
    as the authors' release, whose round 2 retrains from the initial weights. The iteration
    counter, learning-rate schedule (no second warm-up) and the pairwise loss warm-up carry on; for
    a completely fresh second run use ``tools/gen_pseudo_labels.py`` and a second training run
    instead. The initial weights are kept in memory and saved (rank 0) to
    ``out_dir/initial_weights.pth`` for resuming.

    Distributed: each rank predicts every ``world_size``-th image, rank 0 gathers the results and
    writes the json files (atomically), and the broadcast of their paths lets no rank read one
    early. ``out_dir`` must be on a file system that all ranks see (as ``work_dir`` usually is).

    Reloading: every rank rebuilds the train dataloader from the runner's config
    (``runner.cfg.train_dataloader``, so the runner must be built with ``cfg``, as
    ``Runner.from_cfg`` does) with the leaves' ``ann_file`` replaced, with
    :meth:`~mmengine.runner.Runner.build_dataloader` as the runner built it (dataset, sampler,
    batch sampler, workers, seed, ``randomness.diff_rank_seed``). An ``IterBasedTrainLoop`` gets a
    new iterator (of the type of its current one) over it; an ``EpochBasedTrainLoop`` uses it
    from the next epoch (its iteration-based schedules keep the length of the first dataset).

    Resuming: checkpoints store ``{'round', 'ann_files', 'initial_weights'}`` in
    ``meta['self_training']``. A resumed run (one whose iteration or epoch is past 0 when training
    begins, which ``load_from`` alone never makes) trains on those files, does not redo finished
    rounds and, with ``reset_weights``, reloads the initial weights from ``initial_weights``.
    A refresh runs before ``CheckpointHook`` (priority), so a checkpoint saved at a refresh point
    already holds it. ``load_from`` without ``resume`` restores nothing: the config's labels are used.

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
        reset_weights (bool): at each refresh, restore the initial weights and empty the optimizer
            state (see above). Defaults to False.
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
                 out_dir: Optional[str] = None,
                 reset_weights: bool = False) -> None:
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
        self.reset_weights = reset_weights
        self.round = 0
        self.ann_files: Optional[List[str]] = None  # one per leaf dataset, once a round is done
        self.images: Optional[List[dict]] = None  # of all leaves; ``leaf`` says whose
        self.num_leaves = 0
        self.initial_weights: Optional[str] = None
        self._initial_state: Optional[Dict[str, torch.Tensor]] = None
        self._loaded_state: Optional[dict] = None

    def num_due(self, progress: int) -> int:
        """Number of refreshes scheduled at or before ``progress`` iterations (epochs)."""
        if self.interval is not None:
            return progress // self.interval
        return sum(point <= progress for point in self.refresh_at)

    def before_train(self, runner) -> None:
        """Remember the images; on a resumed run restore the round's labels (and initial weights)."""
        self._remember_images(runner)
        resumed = runner.iter > 0 or runner.epoch > 0  # load_from alone leaves both at 0
        state, self._loaded_state = self._loaded_state if resumed else None, None
        if state and state['round'] > 0:
            for ann_file in state['ann_files']:
                if not osp.isfile(ann_file):
                    raise FileNotFoundError(f'the resumed checkpoint trained on self-training round {state["round"]} '
                                            f'labels {ann_file}, which no longer exist')
            self.round, self.ann_files = state['round'], state['ann_files']
            runner.logger.info(f'self-training: resuming after round {self.round} on {self.ann_files}')
            self._train_on(runner, self.ann_files)
        if not self.reset_weights:
            return
        if resumed:
            path = (state or {}).get('initial_weights')
            if path is None or not osp.isfile(path):
                raise FileNotFoundError('SelfTrainingHook(reset_weights=True) resumed a run whose initial weights '
                                        f'are unknown or gone ({path}): the checkpoint was saved without '
                                        'reset_weights, or its initial_weights.pth was removed')
            self.initial_weights = path
            self._initial_state = torch.load(path, map_location='cpu', weights_only=True)
            return
        model_state = self._model(runner).state_dict()
        self._initial_state = {key: value.detach().cpu().clone() for key, value in model_state.items()}
        self.initial_weights = osp.join(self._out_dir(runner), 'initial_weights.pth')
        if get_dist_info()[0] == 0:
            os.makedirs(osp.dirname(self.initial_weights), exist_ok=True)
            tmp_path = self.initial_weights + '.tmp'
            torch.save(self._initial_state, tmp_path)
            os.replace(tmp_path, self.initial_weights)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.by_epoch and self.num_due(runner.iter + 1) > self.round:
            self.refresh(runner)

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.num_due(runner.epoch + 1) > self.round:
            self.refresh(runner)

    def refresh(self, runner) -> None:
        """Predict, write round ``r + 1``'s files (rank 0) and train on them (all ranks)."""
        rank, world_size = get_dist_info()
        pipeline = self.pipeline if self.pipeline is not None else find_test_pipeline(runner.cfg)
        entries = predict_pseudo_labels(self._model(runner), self.images[rank::world_size], pipeline,
                                        **self.select_cfg, batch_size=self.batch_size, num_workers=self.num_workers)
        parts = gather_object(entries, dst=0)
        summaries: List[Any] = [None]
        if rank == 0:
            summaries = [self._write_round(runner, [entry for part in parts for entry in part])]
        broadcast_object_list(summaries)  # returns on every rank once rank 0 has written the files
        summaries = summaries[0]
        for leaf, summary in enumerate(summaries):
            where = f' of train dataset {leaf}' if len(summaries) > 1 else ''
            if summary['num_annotations'] == 0:
                raise RuntimeError(f'self-training round {self.round + 1}: no prediction passed the filters '
                                   f'{self.select_cfg} on any of the {summary["num_images"]} training images{where}')
            runner.logger.info(f'self-training round {self.round + 1}: {summary["num_annotations"]} masks on '
                               f'{summary["num_images_with_masks"]} of {summary["num_images"]} images{where} '
                               f'({summary["num_skipped"]} unreadable) -> {summary["ann_file"]}')
        self.round += 1
        self.ann_files = [summary['ann_file'] for summary in summaries]
        if self.reset_weights:
            self._reset(runner)
        self._train_on(runner, self.ann_files)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[META_KEY] = dict(
            round=self.round, ann_files=self.ann_files, initial_weights=self.initial_weights)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the checkpoint's state for :meth:`before_train`, which knows whether it was a resume."""
        state = checkpoint.get('meta', {}).get(META_KEY)
        if not state:
            self._loaded_state = None
            return
        state = dict(state)
        if 'ann_file' in state:  # checkpoints of the single-dataset version
            ann_file = state.pop('ann_file')
            state['ann_files'] = None if ann_file is None else [ann_file]
        self._loaded_state = state

    @staticmethod
    def _model(runner) -> torch.nn.Module:
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _out_dir(self, runner) -> str:
        return osp.abspath(self.out_dir or osp.join(runner.work_dir, 'self_training'))

    def _write_round(self, runner, entries: List[dict]) -> List[dict]:
        """Rank 0: one COCO file (and report) per leaf dataset; returns their summaries."""
        out_dir, name = self._out_dir(runner), f'round{self.round + 1}'
        summaries = []
        for leaf in range(self.num_leaves):
            coco, report = collect_pseudo_label_coco(
                [entry for entry in entries if self.images[entry['index']]['leaf'] == leaf])
            stem = osp.join(out_dir, name if self.num_leaves == 1 else f'{name}_dataset{leaf}')
            dump_json_atomic(report, stem + '.report.json')
            dump_json_atomic(coco, stem + '.json')
            summaries.append(dict(ann_file=stem + '.json', **{k: v for k, v in report.items() if k.startswith('num_')}))
        return summaries

    def _remember_images(self, runner) -> None:
        """The images to label: those of the train datasets the run started with, leaf by leaf."""
        if self.images is not None:
            return
        leaves = _dataset_leaves(runner.train_dataloader.dataset)
        self.num_leaves = len(leaves)
        self.images = []
        for leaf, dataset in enumerate(leaves):
            prefix = dataset.data_prefix.get('img', '')
            for index in range(len(dataset)):
                info = dataset.get_data_info(index)
                path = info['img_path']  # = join(prefix, file_name)
                file_name = path[len(prefix):].lstrip('/') if prefix and path.startswith(prefix) else path
                self.images.append(
                    dict(index=len(self.images), leaf=leaf, id=info['img_id'], file_name=file_name, path=path))

    def _reset(self, runner) -> None:
        """Restore the initial weights in place (the optimizer and DDP keep their tensors) and empty
        the optimizer state."""
        self._model(runner).load_state_dict(self._initial_state)
        wrappers = runner.optim_wrapper
        for wrapper in wrappers.values() if isinstance(wrappers, OptimWrapperDict) else [wrappers]:
            state = wrapper.optimizer.state_dict()
            wrapper.optimizer.load_state_dict(dict(state, state={}))
        runner.logger.info(f'self-training round {self.round}: weights reset to those at the start of training '
                           f'({self.initial_weights}), optimizer state emptied')

    def _train_on(self, runner, ann_files: Sequence[str]) -> None:
        """Rebuild the train dataloader with the leaf datasets reading ``ann_files``."""
        loader_cfg = runner.cfg.get('train_dataloader')
        if not isinstance(loader_cfg, dict):
            raise TypeError('SelfTrainingHook rebuilds the train dataloader from runner.cfg.train_dataloader: build '
                            f'the runner with its config (Runner.from_cfg), got {type(loader_cfg).__name__}')
        loader_cfg = copy.deepcopy(loader_cfg)
        leaves = _config_leaves(loader_cfg['dataset'])
        if len(leaves) != len(ann_files):
            raise ValueError(f'train_dataloader config has {len(leaves)} leaf datasets, the train dataset '
                             f'{len(ann_files)}')
        for leaf_cfg, ann_file in zip(leaves, ann_files):
            leaf_cfg['ann_file'] = ann_file  # absolute: not joined with data_root
        randomness = runner.cfg.get('randomness') or {}
        loop = runner.train_loop
        loop.dataloader = runner.build_dataloader(
            loader_cfg, seed=runner.seed, diff_rank_seed=randomness.get('diff_rank_seed', False))
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop: a new iterator of the same kind
            loop.dataloader_iterator = type(loop.dataloader_iterator)(loop.dataloader)
