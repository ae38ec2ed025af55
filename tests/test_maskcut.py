"""MaskCut generator: the cut on hand-made graphs with known answers, the output format, batching, configs, tool."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from torch import nn

from freesolo_mmdet.free_mask import MaskCutGenerator
from freesolo_mmdet.free_mask.maskcut import maskcut_bipartitions, ncut_step, patch_affinity

REPO = Path(__file__).resolve().parents[1]
CELL = 4  # output pixels per feature cell in the tests: 12x12 cells -> 48x48 masks


def block(rows: slice, cols: slice, size=(12, 12)) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def pixels(cells: torch.Tensor) -> torch.Tensor:
    """Cells -> their pixel blocks at CELL pixels per cell."""
    return cells.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


A = block(slice(2, 6), slice(1, 6))  # 20 cells
B = block(slice(7, 10), slice(7, 10))  # 9 cells
B_CELLS = [(r, c) for r in range(7, 10) for c in range(7, 10)]


def two_objects(linked: bool = True) -> torch.Tensor:
    """12x12 map: background e0, object A (e1), object B (e2). With ``linked``, B's k-th cell also carries e_{3+k},
    as does the background cell (11, k): each B cell has one link (cosine 0.5) to the background, as an object's
    cells resemble the background next to them; A has none (cosine 0 to everything else)."""
    feat = torch.zeros(3 + len(B_CELLS), 12, 12)
    feat[0] = 1
    feat[:, A] = 0
    feat[1, A] = 1
    feat[:, B] = 0
    feat[2, B] = 1
    if linked:
        for k, (r, c) in enumerate(B_CELLS):
            feat[3 + k, r, c] = 1
            feat[3 + k, 11, k] = 1
    return feat


def ncut_of(feat: torch.Tensor, fg: torch.Tensor, active: torch.Tensor, tau: float = 0.15, eps: float = 1e-5) -> float:
    """Ncut of a partition of the active cells, straight from the definition."""
    unit = F.normalize(feat.flatten(1).double(), dim=0)
    weights = torch.where(unit.t() @ unit >= tau, 1.0, eps).double()
    fg, active = fg.flatten(), active.flatten()
    weights = weights[active][:, active]
    fg = fg[active]
    cut = weights[fg][:, ~fg].sum()
    return float(cut / weights[fg].sum() + cut / weights[~fg].sum())


def test_patch_affinity_thresholds_the_cosine():
    feats = torch.tensor([[1., 0., 1., 0.], [0., 1., 1., 0.]]).view(1, 2, 4)  # e0, e1, e0 + e1, zero
    affinity = patch_affinity(feats, tau=0.5, eps=1e-3)
    expected = torch.tensor([[1, 1e-3, 1, 1e-3], [1e-3, 1, 1, 1e-3], [1, 1, 1, 1e-3], [1e-3, 1e-3, 1e-3, 1e-3]])
    assert affinity.dtype == torch.float64 and torch.allclose(affinity[0], expected.double())
    assert patch_affinity(feats, tau=0.8, eps=1e-3)[0, 0, 2] == 1e-3  # cosine 0.707 < 0.8


def test_two_cliques_cut_matches_the_ncut_definition():
    """Two cliques linked by eps only: the cut separates them, the smaller side (largest |x|) is the foreground,
    and the score is 1 - Ncut of that partition."""
    feat = torch.zeros(2, 4, 5)
    feat[0] = 1
    feat[:, 1:3, 1:3] = torch.tensor([0., 1.])[:, None, None]
    active = torch.ones(1, 20, dtype=torch.bool)
    corners = torch.tensor([[0, 4, 15, 19]])
    fg, soft, score, ok = ncut_step(patch_affinity(feat.flatten(1)[None], 0.15, 1e-5), active, corners, 3)
    small = block(slice(1, 3), slice(1, 3), (4, 5))
    assert ok.item() and torch.equal(fg.view(4, 5), small)
    # eps * 4 * 16 cut, volumes 16 + 64 eps and 256 + 64 eps
    expected = 1 - (64e-5 / (16 + 64e-5) + 64e-5 / (256 + 64e-5))
    assert score.item() == pytest.approx(expected, abs=1e-9)
    assert score.item() == pytest.approx(1 - ncut_of(feat, small, torch.ones(4, 5, dtype=torch.bool)), abs=1e-9)
    assert torch.allclose(soft.view(4, 5)[small], torch.ones(4, dtype=torch.float64))  # two-valued: 1 and 0
    assert torch.allclose(soft.view(4, 5)[~small], torch.zeros(16, dtype=torch.float64))


def test_finds_both_objects_in_order():
    result = MaskCutGenerator().masks_from_features(two_objects(), (48, 48))
    assert len(result) == 2
    for mask, cells in zip(result.masks, (A, B)):  # cut order: isolated A first, then B
        assert iou(mask, pixels(cells)) > 0.97  # bilinear refinement rounds the 4 outer corner pixels off
        assert int((mask ^ pixels(cells)).sum()) == 4
    assert result.scores[0] == pytest.approx(1.0, abs=1e-3)
    everything = torch.ones(12, 12, dtype=torch.bool)
    assert result.scores[1].item() == pytest.approx(1 - ncut_of(two_objects(), B, everything & ~A), abs=1e-6)
    assert 0.85 < result.scores[1] < 0.95  # 9 links out of B's 90: Ncut about 0.1


def test_removing_taken_cells_makes_the_next_cut_find_the_next_object():
    feat = two_objects()
    affinity = patch_affinity(feat.flatten(1)[None], 0.15, 1e-5)
    corners = torch.tensor([[0, 11, 132, 143]])
    active = torch.ones(1, 144, dtype=torch.bool)
    first = ncut_step(affinity, active, corners, 3)[0]
    assert torch.equal(first.view(12, 12), A)
    assert torch.equal(ncut_step(affinity, active, corners, 3)[0], first)  # same graph: same cut
    second = ncut_step(affinity, active & ~first, corners, 3)[0]
    assert torch.equal(second.view(12, 12), B)
    third = ncut_step(affinity, active & ~first & ~second, corners, 3)  # only background: equal affinities
    assert not third[3].item() and not third[0].any()
    cuts = maskcut_bipartitions(feat[None], num_objects=3)
    assert cuts.found.tolist() == [[True, True, False]] and torch.equal(cuts.masks[0, :2], torch.stack([A, B]))


def test_isolated_objects_are_cut_together():
    """Without any link, the first cut takes both objects: on clusters joined only by eps the eigenvector is
    constant on each, x_i ~ 1 / (n - lambda * size_i), and every cluster smaller than n / lambda lies above the
    mean. The rest is one clique, which has no cut."""
    cuts = maskcut_bipartitions(two_objects(linked=False)[None])
    assert cuts.found.tolist() == [[True, False, False]] and torch.equal(cuts.masks[0, 0], A | B)
    # B lies just above the split (soft 0.5 + O(1 / n)): bilinear refinement keeps little of it
    assert 0.5 < cuts.soft[0, 0][B].min() < 0.55 and torch.allclose(cuts.soft[0, 0][A], torch.ones(20).double())


def test_corner_rule():
    ring = torch.ones(12, 12, dtype=torch.bool)
    ring[1:11, 1:11] = False  # 44 border cells: fewer than the 100 inside, so they get the largest |x|
    feat = torch.stack([(~ring).float(), ring.float()])
    cuts = {rule: maskcut_bipartitions(feat[None], num_objects=1, corner_rule=rule).masks[0, 0]
            for rule in (None, 3, 4)}
    assert torch.equal(cuts[None], ring) and torch.equal(cuts[3], ~ring) and torch.equal(cuts[4], ~ring)
    bottom = block(slice(9, 12), slice(0, 12))  # an object along the bottom edge holds 2 corners
    feat = torch.stack([(~bottom).float(), bottom.float()])
    cuts = {rule: maskcut_bipartitions(feat[None], num_objects=1, corner_rule=rule).masks[0, 0] for rule in (2, 3)}
    assert torch.equal(cuts[3], bottom) and torch.equal(cuts[2], ~bottom)
    # corners are those of each image's valid cells: the bottom object of a 12x12 image in a 14x13 padded map
    padded = torch.zeros(2, 14, 13)
    padded[:, :12, :12] = feat
    cuts = maskcut_bipartitions(padded[None], sizes=[(12, 12)], num_objects=1, corner_rule=2).masks[0, 0]
    assert torch.equal(cuts[:12, :12], ~bottom) and not cuts[12:].any() and not cuts[:, 12:].any()


@pytest.mark.parametrize('feat', [torch.ones(8, 6, 7), torch.zeros(8, 6, 7), torch.rand(8, 1, 1),
                                  torch.rand(8, 0, 5)], ids=['constant', 'zero', '1x1', 'empty'])
def test_degenerate_maps_give_no_mask(feat):
    result = MaskCutGenerator().masks_from_features(feat, (30, 35))
    assert len(result) == 0
    assert result.masks.shape == (0, 30, 35) and result.masks.dtype == torch.bool
    assert result.scores.shape == (0, ) and result.labels.shape == (0, ) and result.embs.shape == (0, 128)


def test_output_format_and_embeddings():
    feat = two_objects()
    result = MaskCutGenerator().masks_from_features(feat, (48, 48))
    assert result.masks.dtype == torch.bool and result.scores.dtype == torch.float32
    assert result.labels.dtype == torch.long and torch.equal(result.labels, torch.zeros(2, dtype=torch.long))
    assert result.embs.shape == (2, 128) and ((result.scores > 0) & (result.scores <= 1)).all()
    raw = MaskCutGenerator(emb_dim=None).masks_from_features(feat, (48, 48)).embs
    unit = F.normalize(feat.flatten(1), dim=0)
    for emb, cells in zip(raw, (A, B)):
        assert torch.allclose(emb, F.normalize(unit[:, cells.flatten()].mean(1), dim=0), atol=1e-6)
    assert torch.allclose(result.embs, F.interpolate(raw[:, None], size=128, mode='linear')[:, 0])


def test_image_fraction_crops_the_padding():
    feat = two_objects()
    full = MaskCutGenerator().masks_from_features(feat, (48, 48))
    cropped = MaskCutGenerator().masks_from_features(feat, (37, 45), (37 / 48, 45 / 48))
    assert torch.equal(cropped.masks, full.masks[:, :37, :45])


def test_refinement_options():
    feat = two_objects()
    blocks = MaskCutGenerator(refine='none').masks_from_features(feat, (48, 48)).masks
    assert torch.equal(blocks, torch.stack([pixels(A), pixels(B)]))
    # a single-cell object: at 8 pixels per cell the bilinear refinement keeps 40 of its 64 pixels, IoU 0.625
    single = torch.zeros(2, 12, 12)
    single[0] = 1
    single[:, 5, 6] = torch.tensor([0., 1.])
    counts = {thr: len(MaskCutGenerator(min_refine_iou=thr).masks_from_features(single, (96, 96)))
              for thr in (None, 0.5, 0.7)}
    assert counts == {None: 1, 0.5: 1, 0.7: 0}
    refined = MaskCutGenerator().masks_from_features(single, (96, 96)).masks[0]
    raw = MaskCutGenerator(refine='none').masks_from_features(single, (96, 96)).masks[0]
    assert int(raw.sum()) == 64 and int(refined.sum()) == 40 and iou(refined, raw) == 0.625
    assert len(MaskCutGenerator(min_score=0.95).masks_from_features(feat, (48, 48))) == 1  # B scores about 0.9
    with pytest.raises(ValueError, match='refine'):
        MaskCutGenerator(refine='crf')


class FixedFeatures(nn.Module):
    """A stand-in backbone: returns the given features for any input."""

    def __init__(self, feats: torch.Tensor) -> None:
        super().__init__()
        self.feats = feats

    def forward(self, inputs: torch.Tensor):
        return (self.feats, )


def test_batched_predict_equals_single_images():
    """Two images padded into one batch (one eigen-solve per cut for both) give each image's own result."""
    torch.manual_seed(0)
    small = (torch.rand(12, 9, 11) - 0.5) * 0.1 + two_objects()[:, :9, :11]  # noisy crop: 9x11 valid cells
    feats = torch.zeros(2, 12, 12, 12)
    feats[0] = two_objects() + (torch.rand(12, 12, 12) - 0.5) * 0.1
    feats[1, :, :9, :11] = small
    feats[1, :, 9:] = torch.rand(12, 3, 12)  # padding cells hold garbage: they must not matter
    feats[1, :, :, 11:] = torch.rand(12, 12, 1)
    generator = MaskCutGenerator()
    generator.backbone = FixedFeatures(feats)
    samples = [DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(48, 48))),
               DetDataSample(metainfo=dict(img_shape=(70, 85), ori_shape=(35, 42)))]  # 9 x 11 cells of stride 8
    batched = generator.predict(torch.zeros(2, 3, 96, 96), samples)
    singles = [generator.masks_from_features(feats[0], (48, 48)),
               generator.masks_from_features(small, (35, 42), (70 / 72, 85 / 88))]
    assert [len(r) for r in batched] == [len(r) for r in singles] and len(batched[0]) >= 2 and len(batched[1]) >= 1
    for got, expected in zip(batched, singles):
        assert torch.equal(got.masks, expected.masks)
        assert torch.allclose(got.scores, expected.scores, atol=1e-6)
        assert torch.allclose(got.embs, expected.embs, atol=1e-6)
    cuts = maskcut_bipartitions(feats, sizes=[(12, 12), (9, 11)])
    for b, (feat, size) in enumerate(((feats[0], (12, 12)), (small, (9, 11)))):
        alone = maskcut_bipartitions(feat[None])
        assert torch.equal(cuts.masks[b, :, :size[0], :size[1]], alone.masks[0])
        assert torch.allclose(cuts.scores[b], alone.scores[0], atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_runs_on_the_inputs_device():
    feat = two_objects() + (torch.rand(12, 12, 12) - 0.5) * 0.1
    on_cpu = MaskCutGenerator().masks_from_features(feat, (48, 48))
    on_gpu = MaskCutGenerator().masks_from_features(feat.cuda(), (48, 48))
    assert on_gpu.masks.is_cuda and torch.equal(on_gpu.masks.cpu(), on_cpu.masks)
    assert torch.allclose(on_gpu.scores.cpu(), on_cpu.scores, atol=1e-5)


def build_config(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    assert cfg.model.type == 'MaskCutGenerator'
    return cfg


def test_configs_build_and_predict():
    from mmengine.dataset import pseudo_collate
    cfg = build_config(REPO / 'configs' / 'free_mask' / 'maskcut_r50_densecl.py')
    base = Config.fromfile(str(REPO / 'configs' / 'free_mask' / 'free_mask_r50_densecl.py'))
    assert cfg.model.backbone == base.model.backbone and cfg.model.data_preprocessor == base.model.data_preprocessor
    assert cfg.test_pipeline == base.test_pipeline and cfg.free_mask_cfg == base.free_mask_cfg
    demo = build_config(REPO / 'configs' / 'demo' / 'maskcut_demo.py')
    assert demo.model.backbone.type == 'MobileNetV2' and demo.model.tau == 0.7
    cfg.model.backbone.update(depth=18, init_cfg=None)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    images = [torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), torch.randint(0, 255, (3, 50, 70),
                                                                                   dtype=torch.uint8)]
    samples = [DetDataSample(metainfo=dict(img_shape=tuple(img.shape[1:]),
                                           ori_shape=(img.shape[1] * 2, img.shape[2] * 2)))
               for img in images]
    results = model.test_step(pseudo_collate([dict(inputs=i, data_samples=s) for i, s in zip(images, samples)]))
    for result, img in zip(results, images):
        assert result.masks.shape[1:] == (img.shape[1] * 2, img.shape[2] * 2) and len(result) <= 3
        assert result.embs.shape == (len(result), 128)
    with pytest.raises(ValueError, match='predict'):
        model(torch.zeros(1, 3, 64, 64), mode='loss')


def test_generate_free_masks_tool_takes_the_maskcut_config(tmp_path):
    spec = importlib.util.spec_from_file_location('generate_free_masks', REPO / 'tools' / 'generate_free_masks.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / 'tiny.py').write_text(f"""
_base_ = {str(REPO / 'configs' / 'free_mask' / 'maskcut_r50_densecl.py')!r}
model = dict(backbone=dict(depth=18, init_cfg=None), tau=0.9)  # random-init C5: cosines 0.84-0.92
test_pipeline = [
    dict(type='LoadAnyImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
free_mask_cfg = dict(batch_size=2, num_workers=0, chunk_size=2)
""")
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (('a.jpg', (60, 80)), ('b.png', (70, 50)), ('c.jpg', (64, 64))):
        img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.rectangle(img, (w // 4, h // 4), (w // 2, h // 2), [int(v) for v in rng.integers(0, 255, 3)], -1)
        cv2.imwrite(str(images / name), img)
    out = tmp_path / 'maskcut.json'
    tool.main([str(tmp_path / 'tiny.py'), '--images', str(images), '--out', str(out)])
    report = json.loads((tmp_path / 'maskcut.report.json').read_text())
    coco = json.loads(out.read_text())
    assert report['num_images'] == 3 and report['num_skipped'] == 0
    assert report['num_images_with_masks'] + report['num_no_mask'] == 3 and report['num_annotations'] > 0
    assert len(coco['annotations']) == report['num_annotations'] <= 3 * report['num_images_with_masks']
    for ann in coco['annotations']:
        assert len(ann['emb']) == 128 and 0 < ann['score'] <= 1 and ann['area'] > 0
