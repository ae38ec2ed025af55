"""Hungarian-matched mIoU against hand-worked cases; K-means on separable points."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from projects.maskcontrast.maskcontrast import (confusion_matrix, hungarian_match, hungarian_miou,  # noqa: E402
                                                kmeans, kmeans_assign, kmeans_miou)


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


def test_kmeans_miou_perfect_on_separable_features():
    # two images of 4x4 pixels, features = one-hot of the label -> K-means mIoU must be 1
    labels = [torch.tensor([[0, 0, 1, 1]] * 4), torch.tensor([[2, 2, 0, 0]] * 4)]
    feats = [torch.nn.functional.one_hot(lab, 3).permute(2, 0, 1).half() for lab in labels]
    res = kmeans_miou(feats, labels, num_classes=3, num_samples=32, seeds=(0, 1), iters=20, n_init=2)
    assert res['miou'] == pytest.approx(1.0) and res['miou_std'] == pytest.approx(0.0)


def test_kmeans_segmentation_maps_clusters_through_the_hungarian_mapping():
    from projects.maskcontrast.maskcontrast import kmeans_segmentation
    # 2x2 features: left column along +x, right column along +y
    feat = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]]])
    centers = torch.tensor([[0., 1.], [1., 0.], [-1., 0.]])  # cluster 0 = +y, 1 = +x, 2 = unused
    mapping = np.array([3, 1, -1])
    seg = kmeans_segmentation(feat, (2, 2), centers, mapping)
    assert seg.tolist() == [[1, 3], [1, 3]]
    seg = kmeans_segmentation(feat, (4, 4), centers, mapping)  # upsampled to the label size
    assert seg.shape == (4, 4) and seg[:, 0].tolist() == [1] * 4 and seg[:, 3].tolist() == [3] * 4


def test_segmentation_panel_layout_and_colours():
    from projects.maskcontrast.maskcontrast import class_palette, segmentation_panel
    image = np.full((10, 12, 3), 100, np.uint8)
    gt = np.zeros((10, 12), np.int64)
    gt[:, 6:] = 2
    pred = np.full((10, 12), -1)  # no class: black
    panel = segmentation_panel(image, gt, {'pred': pred}, ['background', 'a', 'b'], alpha=0.5)
    assert panel.shape == (22 + 10 + 22, 3 * 12, 3)
    palette = class_palette(3)
    assert len({tuple(c) for c in palette}) == 4
    tile_gt = panel[22:32, 12:24]
    assert (tile_gt[:, 6:] == (0.5 * palette[2] + 50).astype(np.uint8)).all()
    assert (tile_gt[:, :6] == (0.5 * palette[0] + 50).astype(np.uint8)).all()
    assert (panel[22:32, 24:36] == 50).all()  # black blended half over grey 100
