# Copyright (c) freesolo_mmdet contributors.
"""Load and pack the per-mask ``score`` and ``emb`` of coarse-mask datasets."""
import numpy as np

from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs
from mmdet.registry import TRANSFORMS

__all__ = ['LoadCoarseMaskAnnotations', 'PackCoarseMaskInputs']


@TRANSFORMS.register_module()
class LoadCoarseMaskAnnotations(LoadAnnotations):
    """:class:`LoadAnnotations` (boxes, labels, masks by default) that also
    loads ``gt_scores`` (n, ) float32 and ``gt_embs`` (n, D) float32 from the
    instances of :class:`CoarseMaskCocoDataset`.

    Transforms that drop instances (e.g. ``RandomCrop``,
    ``FilterAnnotations``) do not know these keys;
    :class:`PackCoarseMaskInputs` checks the lengths still agree.

    Args:
        with_score (bool): Load ``gt_scores``. Defaults to True.
        with_emb (bool): Load ``gt_embs``. Defaults to True.
        with_mask (bool): Load ``gt_masks``. Defaults to True.
        **kwargs: Arguments of :class:`LoadAnnotations`.
    """

    def __init__(self,
                 with_score: bool = True,
                 with_emb: bool = True,
                 with_mask: bool = True,
                 **kwargs) -> None:
        super().__init__(with_mask=with_mask, **kwargs)
        self.with_score = with_score
        self.with_emb = with_emb

    def transform(self, results: dict) -> dict:
        """Load the annotations, then ``gt_scores`` and ``gt_embs``."""
        results = super().transform(results)
        instances = results.get('instances', [])
        if self.with_score:
            results['gt_scores'] = np.array(
                [instance['score'] for instance in instances],
                dtype=np.float32)
        if self.with_emb:
            if 'emb_dim' not in results:
                raise KeyError('`emb_dim` missing from the data info: load '
                               'with CoarseMaskCocoDataset.')
            results['gt_embs'] = np.array(
                [instance['emb'] for instance in instances],
                dtype=np.float32).reshape(len(instances), results['emb_dim'])
        return results


@TRANSFORMS.register_module()
class PackCoarseMaskInputs(PackDetInputs):
    """:class:`PackDetInputs` that also packs ``gt_scores`` into
    ``gt_instances.scores`` (n, ) and ``gt_embs`` into ``gt_instances.embs``
    (n, D), split by ``gt_ignore_flags`` like the boxes."""

    mapping_table = {
        **PackDetInputs.mapping_table, 'gt_scores': 'scores',
        'gt_embs': 'embs'
    }

    def transform(self, results: dict) -> dict:
        """Check the instance counts agree, then pack."""
        num_instances = len(results.get('gt_ignore_flags', []))
        for key in ('gt_scores', 'gt_embs'):
            if key in results and 'gt_ignore_flags' in results and \
                    len(results[key]) != num_instances:
                raise ValueError(
                    f'{key} has {len(results[key])} rows but there are '
                    f'{num_instances} instances: a transform dropped '
                    f'instances without updating {key}.')
        return super().transform(results)
