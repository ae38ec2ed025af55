"""Hungarian-matched mIoU against hand-worked cases; K-means; the pixel sample and the mmengine metrics built on
it; the visualiser."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import cv2  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

from projects.maskcontrast.maskcontrast import (KMeansMIoU, LinearProbeMIoU, PixelReservoir,  # noqa: E402
                                                SemSegLocalVisualizer, class_palette, confusion_matrix,
                                                hungarian_match, hungarian_miou, iou_from_confusion, kmeans,
                                                kmeans_assign, kmeans_segmentation, sample_bilinear,
                                                train_linear_probe)


def test_hungarian_miou_hand_worked():
    gt = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([2, 2, 1, 0, 0, 1, 1, 1])
    conf = confusion_matrix(pred, gt, 3, 3)
    # rows: clusters, cols: classes
    assert conf.tolist() == [[0, 2, 0], [1, 0, 3], [2, 0, 0]]
    assert hungarian_match(conf).tolist() == [1, 2, 0]  # cluster 0 -> class 1, 1 -> 2, 2 -> 0
    res = hungarian_miou(conf)
    # remapped prediction [0, 0, 2, 1, 1, 2, 2, 2]: IoU class 0 = 2/3, class 1 = 2/2, class 2 = 3/4
    assert res['ious'].tolist() == pytest.approx([2 / 3, 1.0, 3 / 4])
    assert res['miou'] == pytest.approx((2 / 3 + 1 + 3 / 4) / 3)  # 0.805556
    assert res['miou'] == pytest.approx(0.805556, abs=1e-6)
    assert res['pixel_acc'] == pytest.approx(7 / 8)


def test_hungarian_miou_more_clusters_than_classes():
    gt = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    res = hungarian_miou(confusion_matrix(pred, gt, 3, 2))
    # one cluster stays unmatched; its pixel (class 0) is a miss: IoU 0 = 1/2, IoU 1 = 1
    assert (res['mapping'] >= 0).sum() == 2
    assert res['ious'].tolist() == pytest.approx([0.5, 1.0])
    assert res['miou'] == pytest.approx(0.75)


def test_confusion_ignores_index_and_absent_class_is_nan():
    gt = torch.tensor([0, 0, 255, 1])
    pred = torch.tensor([1, 1, 0, 0])
    conf = confusion_matrix(pred, gt, 3, 3)
    assert conf.sum() == 3
    res = hungarian_miou(conf)
    assert res['miou'] == pytest.approx(1.0)  # class 2 absent everywhere: NaN, skipped
    assert np.isnan(res['ious'][2])


def test_kmeans_separable_points():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0., 0.], [10., 0.], [0., 10.]])
    truth = torch.arange(3).repeat_interleave(50)
    x = centers[truth] + 0.3 * torch.randn(150, 2, generator=gen)
    found, labels, inertia = kmeans(x, 3, seed=1)
    # every true blob is one cluster, and the centers land on the blob means
    for c in range(3):
        assert labels[truth == c].unique().numel() == 1
    assert labels.unique().numel() == 3
    for c in range(3):
        assert (found - centers[c]).norm(dim=1).min() < 0.2
    assert inertia < 150 * 4 * 0.09 * 2
    assigned, dist = kmeans_assign(centers, found)
    assert dist.max() < 0.04 and sorted(assigned.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError):
        kmeans(x[:2], 3)


def as_outputs(feats, labels, split='val'):
    """What mmengine's Evaluator hands a metric: the model's data samples as dicts."""
    outputs = []
    for i, (feat, label) in enumerate(zip(feats, labels)):
        sample = DetDataSample(metainfo=dict(sample_idx=i, split=split))
        sample.gt_sem_seg = PixelData(sem_seg=label[None])
        sample.pred_feats = PixelData(data=feat)
        outputs.append(sample.to_dict())
    return outputs


def separable_images(num_images=4, size=(8, 12)):
    """Labels in 3 vertical bands shifted per image; features = one-hot of the label (3 channels)."""
    labels = [torch.arange(size[1]).div(size[1] / 3, rounding_mode='floor').long().roll(i).repeat(size[0], 1)
              for i in range(num_images)]
    return [F.one_hot(lab, 3).permute(2, 0, 1).float() for lab in labels], labels


def test_kmeans_metric_perfect_on_separable_features_and_bounded():
    feats, labels = separable_images()
    metric = KMeansMIoU(num_samples=200, seeds=(0, 1), iters=20, n_init=2)
    metric.dataset_meta = dict(classes=('background', 'a', 'b'))
    metric.process(None, as_outputs(feats, labels) + as_outputs(feats, labels, split='probe_train'))
    assert len(metric.samples['val']) == 200  # of 4 x 96 pixels; the other split is not kept
    res = metric.evaluate(4)
    assert res['kmeans/mIoU'] == pytest.approx(100.0) and res['kmeans/mIoU_std'] == pytest.approx(0.0)
    assert res['kmeans/mIoU_per_seed'] == [100.0, 100.0] and res['kmeans/IoU_per_class'] == [100.0] * 3
    assert metric.last_fit['centers'].shape == (3, 3) and sorted(metric.last_fit['mapping'].tolist()) == [0, 1, 2]
    assert len(metric.samples['val']) == 0  # reset after the evaluation


def test_kmeans_metric_scores_the_sample_like_all_pixels():
    # noisy features: a fixed K-means fit scored on a 20% sample vs on every pixel
    gen = torch.Generator().manual_seed(0)
    feats, labels = separable_images(num_images=20, size=(16, 24))
    feats = [f + 0.5 * torch.randn(f.shape, generator=gen) for f in feats]
    metric = KMeansMIoU(num_samples=1536, seeds=(0, ), iters=100, n_init=3)
    metric.dataset_meta = dict(classes=('background', 'a', 'b'))
    metric.process(None, as_outputs(feats, labels))
    sampled = metric.evaluate(20)['kmeans/mIoU']
    centers, mapping = metric.last_fit['centers'], metric.last_fit['mapping']
    conf = sum(confusion_matrix(kmeans_segmentation(f, lab.shape, centers, mapping), lab, 3, 3)
               for f, lab in zip(feats, labels))
    everything = 100 * float(np.nanmean(iou_from_confusion(conf)))
    assert 40 < everything < 95  # a real, imperfect segmentation
    assert sampled == pytest.approx(everything, abs=3)


def test_sample_bilinear_equals_full_upsampling():
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(5, 7, 9, generator=gen)
    for size in ((7, 9), (28, 36), (31, 50), (5, 4)):
        full = F.interpolate(feat[None], size, mode='bilinear', align_corners=False)[0].flatten(1).t()
        index = torch.randperm(size[0] * size[1], generator=gen)[:40]
        assert torch.allclose(sample_bilinear(feat, index, size), full[index], atol=1e-5)


def test_reservoir_is_uniform_bounded_mergeable_and_counts_repeats_once():
    label_small, label_large = torch.zeros(10, 10, dtype=torch.long), torch.ones(10, 30, dtype=torch.long)
    feat = torch.ones(2, 5, 5)
    taken_small = []
    for seed in range(200):
        r = PixelReservoir(80, seed=seed)
        r.add(0, feat, label_small)
        r.add(1, feat, label_large)
        assert len(r) == 80
        taken_small.append(int((r.labels == 0).sum()))
    assert np.mean(taken_small) == pytest.approx(80 * 100 / 400, abs=1.0)  # 20 of 80: proportional to pixels

    # memory does not grow with the images: 2x the images, the same sample size
    one, two = PixelReservoir(300, seed=1), PixelReservoir(300, seed=1)
    for i in range(10):
        one.add(i, feat, label_large)
        two.add(i, feat, label_large)
        two.add(100 + i, feat, label_large)
    assert len(one) == len(two) == 300 and two.feats.shape == one.feats.shape == (300, 2)

    # two ranks' samples merge into the sample of one process; an image seen twice counts once
    whole, rank0, rank1 = (PixelReservoir(150, seed=3) for _ in range(3))
    for i in range(6):
        whole.add(i, torch.randn(2, 5, 5), torch.full((10, 10), i))
    for i in range(6):
        (rank0 if i % 2 == 0 else rank1).add(i, torch.zeros(2, 5, 5), torch.full((10, 10), i))
    rank1.add(4, torch.zeros(2, 5, 5), torch.full((10, 10), 4))  # DDP padding repeats image 4 on rank 1
    merged = PixelReservoir.merge([rank0.state(), rank1.state()], 150)
    assert torch.equal(merged['codes'], whole.state()['codes'])
    assert merged['codes'].unique().numel() == 150 and torch.equal(merged['labels'], whole.labels)


def test_linear_probe_metric():
    feats, labels = separable_images()
    metric = LinearProbeMIoU(num_samples=300, iters=100, lr=0.1)
    metric.dataset_meta = dict(classes=('background', 'a', 'b'))
    metric.process(None, as_outputs(feats[:2], labels[:2], split='probe_train') + as_outputs(feats[2:], labels[2:]))
    res = metric.evaluate(4)
    assert res['probe/mIoU'] == pytest.approx(100.0) and res['probe/aAcc'] == pytest.approx(100.0)
    # labels unrelated to the features cannot be learnt: about chance
    gen = torch.Generator().manual_seed(0)
    noise = [torch.randint(3, lab.shape, generator=gen) for lab in labels]
    metric.process(None, as_outputs(feats[:2], noise[:2], split='probe_train') + as_outputs(feats[2:], noise[2:]))
    assert metric.evaluate(4)['probe/mIoU'] < 40
    # the probe's seeded initialisation leaves the caller's random state alone (validation during training)
    x, y = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    state = torch.get_rng_state()
    train_linear_probe(x, y, 3, iters=1)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="no pixels of split 'probe_train'"):
        metric.process(None, as_outputs(feats, labels))
        metric.evaluate(4)


def test_kmeans_segmentation_maps_clusters_through_the_hungarian_mapping():
    # 2x2 features: left column along +x, right column along +y
    feat = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]]])
    centers = torch.tensor([[0., 1.], [1., 0.], [-1., 0.]])  # cluster 0 = +y, 1 = +x, 2 = unused
    mapping = np.array([3, 1, -1])
    seg = kmeans_segmentation(feat, (2, 2), centers, mapping)
    assert seg.tolist() == [[1, 3], [1, 3]]
    seg = kmeans_segmentation(feat, (4, 4), centers, mapping)  # upsampled to the label size
    assert seg.shape == (4, 4) and seg[:, 0].tolist() == [1] * 4 and seg[:, 3].tolist() == [3] * 4


def test_visualizer_panel_layout_and_colours(tmp_path):
    visualizer = SemSegLocalVisualizer(name=f'mc_vis_{tmp_path.name}', alpha=0.5)
    visualizer.dataset_meta = dict(classes=('background', 'a', 'b'))
    image = np.full((10, 12, 3), 100, np.uint8)
    sample = DetDataSample()
    gt = torch.zeros(1, 10, 12, dtype=torch.long)
    gt[..., 6:] = 2
    sample.gt_sem_seg = PixelData(sem_seg=gt)
    sample.pred_sem_seg = PixelData(sem_seg=torch.full((1, 10, 12), -1))  # no class: black
    out = tmp_path / 'panel.png'
    panel = visualizer.add_datasample('x', image, sample, out_file=str(out))
    assert panel.shape == (22 + 10 + 22, 3 * 12, 3)
    assert (cv2.imread(str(out))[..., ::-1] == panel).all()
    palette = class_palette(3)
    assert len({tuple(c) for c in palette}) == 4
    tile_gt = panel[22:32, 12:24].astype(int)
    assert np.abs(tile_gt[:, 6:] - (0.5 * palette[2] + 50)).max() <= 1
    assert np.abs(tile_gt[:, :6] - (0.5 * palette[0] + 50)).max() <= 1
    assert np.abs(panel[22:32, 24:36].astype(int) - 50).max() <= 1  # black blended half over grey 100
    assert (panel[22:32, :12] == 100).all()  # the image tile untouched
