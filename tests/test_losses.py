"""Tests of the FreeSOLO losses against hand-computed and numpy values."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub

from freesolo_mmdet.models.losses.pairwise_affinity_loss import \
    PairwiseAffinityLoss
from freesolo_mmdet.models.losses.projection_loss import (AvgProjLoss,
                                                          MaxProjLoss)
from mmdet.registry import MODELS

# (dy, dx) of the 8 neighbours, in the order of unfold_wo_center (k=3, d=2).
OFFSETS = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2)
           if (dy, dx) != (0, 0)]


def np_dice(x, y, eps=1e-5):
    return 1 - 2 * (x * y).sum(-1) / ((x * x).sum(-1) + (y * y).sum(-1) + eps)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_box(targets, box_mode):
    """(N, H, W) box weights of binary targets: the outer product of the
    max-projections, or the filled bounding box."""
    box = np.zeros(targets.shape, np.float64)
    for i, target in enumerate(targets):
        ys, xs = np.nonzero(target)
        if box_mode == 'projection':
            box[i] = np.outer(target.max(axis=1) > 0, target.max(axis=0) > 0)
        elif len(ys):
            box[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    return box


def np_pairwise(logits, targets, sim, thr=0.3, box_mode='projection',
                box=None):
    """Loop reference; pairs with a neighbour outside the map do not count.
    ``box`` (N, H, W) overrides the box weights made from the targets."""
    p = np_sigmoid(logits.astype(np.float64))
    n, h, w = p.shape
    box = np_box(targets, box_mode) if box is None else box
    loss_sum = weight_sum = 0.0
    for i in range(n):
        for k, (dy, dx) in enumerate(OFFSETS):
            for y in range(h):
                for x in range(w):
                    weight = float(sim[i, k, y, x] >= thr) * box[i, y, x]
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        weight_sum += weight
                        pi, pj = p[i, y, x], p[i, y + dy, x + dx]
                        loss_sum += -weight * np.log(pi * pj + (1 - pi) *
                                                     (1 - pj))
    return loss_sum / max(weight_sum, 1.0)


@pytest.fixture
def message_hub_iter():
    """Set the current MessageHub's 'iter' info, restoring it afterwards."""
    hub = MessageHub.get_current_instance()
    old = hub.get_info('iter')

    def set_iter(value):
        if value is None:
            hub.pop_info('iter')
        else:
            hub.update_info('iter', value)

    yield set_iter
    set_iter(old)


def rect_target():
    """(1, 4, 4) target: rows 1-2, columns 0-2."""
    target = torch.zeros(1, 4, 4)
    target[0, 1:3, 0:3] = 1
    return target


def test_projection_losses_hand_values():
    logits = torch.zeros(1, 4, 4)  # p = 0.5 everywhere
    # max: along H -> [1,1,1,0]: 1 - 3/4; along W -> [0,1,1,0]: 1 - 2/3.
    expected_max = 0.25 + 1 / 3
    # mean: along H -> [.5,.5,.5,0]: 1 - 1.5/1.75; along W -> [0,.75,.75,0]:
    # 1 - 1.5/2.125. AvgProjLoss weight defaults to 0.1.
    expected_avg = 0.1 * ((1 - 1.5 / 1.75) + (1 - 1.5 / 2.125))
    assert MaxProjLoss()(logits, rect_target()).item() == pytest.approx(
        expected_max, abs=1e-5)
    assert AvgProjLoss()(logits, rect_target()).item() == pytest.approx(
        expected_avg, abs=1e-6)


@pytest.mark.parametrize('loss_cls,project', [(MaxProjLoss, np.max),
                                              (AvgProjLoss, np.mean)])
def test_projection_losses_against_numpy(loss_cls, project):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5)).astype(np.float32) * 3
    targets = (rng.random((2, 4, 5)) > 0.5).astype(np.float32)
    p = np_sigmoid(logits.astype(np.float64))
    per_instance = (
        np_dice(project(p, 1), project(targets, 1)) +
        np_dice(project(p, 2), project(targets, 2)))
    for dtype in (torch.bool, torch.uint8, torch.float32):  # the head's targets are uint8
        loss = loss_cls(loss_weight=0.7)(torch.from_numpy(logits),
                                         torch.from_numpy(targets).to(dtype))
        assert loss.item() == pytest.approx(0.7 * per_instance.mean(), rel=1e-5), dtype


@pytest.mark.parametrize('loss_cls', [MaxProjLoss, AvgProjLoss])
def test_projection_losses_empty_and_gradients(loss_cls):
    empty = torch.zeros(0, 4, 4, requires_grad=True)
    loss = loss_cls()(empty, torch.zeros(0, 4, 4))
    assert loss.item() == 0
    loss.backward()
    assert empty.grad.shape == (0, 4, 4)

    logits = torch.randn(2, 4, 4, requires_grad=True)
    # an all-zero target: dice of a zero projection is exactly 1 per axis
    loss = loss_cls(loss_weight=1.0)(logits, torch.zeros(2, 4, 4))
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    loss = loss_cls()(logits, rect_target().expand(2, 4, 4))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_max_projection_of_logits_equals_projection_of_probabilities():
    """MaxProjLoss takes the max of the logits before the sigmoid: the same projections, and without ties the
    same gradient, as projecting the probabilities."""
    torch.manual_seed(0)
    logits = (torch.randn(3, 6, 7) * 4).requires_grad_()
    reference = logits.detach().clone().requires_grad_()
    targets = (torch.rand(3, 6, 7) > 0.6).to(torch.uint8)
    loss_fn = MaxProjLoss(loss_weight=0.8)
    along_h, along_w = loss_fn.prob_projections(logits)
    assert torch.equal(along_h, logits.sigmoid().amax(1)) and torch.equal(along_w, logits.sigmoid().amax(2))
    loss_fn(logits, targets).backward()
    probs = reference.sigmoid()
    expected = sum(1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + 1e-5)
                   for p, t in ((probs.amax(1), targets.amax(1).float()), (probs.amax(2), targets.amax(2).float())))
    (0.8 * expected.mean()).backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    assert (logits.grad != 0).sum() > 0


def test_projection_instance_losses_are_the_mean_terms():
    torch.manual_seed(1)
    logits, targets = torch.randn(4, 5, 6), (torch.rand(4, 5, 6) > 0.5).to(torch.uint8)
    for loss_fn in (MaxProjLoss(loss_weight=0.5), AvgProjLoss(loss_weight=0.3)):
        per_instance = loss_fn.instance_losses(logits, targets)
        assert per_instance.shape == (4, )
        for i in range(4):  # each instance alone
            assert per_instance[i].item() == pytest.approx(loss_fn(logits[i:i + 1], targets[i:i + 1]).item(),
                                                           rel=1e-6)
        assert per_instance.mean().item() == pytest.approx(loss_fn(logits, targets).item(), rel=1e-6)


def test_pairwise_instance_sums_pool_like_one_batch():
    """Sums of two calls (say, two images), pooled by reduce, equal the loss of one call on both, and
    an instance without a box adds nothing."""
    torch.manual_seed(2)
    h, w = 14, 12
    targets = torch.zeros(5, h, w, dtype=torch.uint8)
    targets[0, 2:6, 1:5] = targets[1, 7:14, 3:12] = targets[3, 0:3, 0:12] = targets[4, 5:9, 5:8] = 1
    logits, sims = torch.randn(5, h, w) * 2, torch.rand(2, 8, h, w)
    img_inds = torch.tensor([0, 0, 1, 1, 1])
    loss_fn = PairwiseAffinityLoss(warmup_iters=0, loss_weight=0.9)
    first = loss_fn.instance_sums(logits[:2], targets[:2], sims, img_inds[:2])
    second = loss_fn.instance_sums(logits[2:], targets[2:], sims, img_inds[2:])
    assert second[0][0] == 0 and second[1][0] == 0  # instance 2 is empty
    assert (first[1] > 0).all() and first[1].dtype == torch.long
    pooled = loss_fn.reduce(torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]))
    assert pooled.item() == pytest.approx(loss_fn(logits, targets, sims, img_inds).item(), rel=1e-6)
    reference = full_map_pairwise(logits, targets.float(), sims[img_inds])
    assert pooled.item() == pytest.approx(0.9 * reference.item(), rel=1e-5)


def test_projection_loss_shape_mismatch_and_registry():
    with pytest.raises(ValueError, match='differ in shape'):
        MaxProjLoss()(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
    assert isinstance(MODELS.build(dict(type='AvgProjLoss')), AvgProjLoss)
    assert isinstance(
        MODELS.build(dict(type='PairwiseAffinityLoss')), PairwiseAffinityLoss)


def test_pairwise_hand_value():
    # single-pixel coarse mask at (1, 1): its box is that pixel only. Its
    # in-map neighbours at dilation 2 are (1, 3), (3, 1), (3, 3).
    logits = torch.zeros(1, 4, 4)
    logits[0, 1, 1] = math.log(3)  # p = 0.75
    logits[0, 1, 3] = math.log(3)  # p = 0.75: same = .5625 + .0625
    logits[0, 3, 1] = -math.log(3)  # p = 0.25: same = .1875 + .1875
    target = torch.zeros(1, 4, 4)
    target[0, 1, 1] = 1
    sim = torch.zeros(1, 8, 4, 4)
    sim[0, [4, 6, 7], 1, 1] = 1  # the in-map neighbours of (1, 1)
    expected = -(math.log(0.625) + math.log(0.375) + math.log(0.5)) / 3
    loss = PairwiseAffinityLoss(warmup_iters=0)(logits, target, sim)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('box_mode', ['projection', 'filled'])
def test_pairwise_against_numpy(box_mode):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 6)).astype(np.float32) * 2
    targets = np.zeros((2, 5, 6), np.float32)
    targets[0, 1:4, 2:5] = 1
    # filled box rows 0-3, cols 0-4; projection box rows {0, 3} x cols {0, 4}
    targets[1, 0, 0] = targets[1, 3, 4] = 1
    sim = rng.random((2, 8, 5, 6)).astype(np.float32)
    loss = PairwiseAffinityLoss(
        loss_weight=2.0, warmup_iters=0,
        box_mode=box_mode)(torch.from_numpy(logits),
                           torch.from_numpy(targets), torch.from_numpy(sim))
    expected = 2.0 * np_pairwise(logits, targets, sim, box_mode=box_mode)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pairwise_box_of_a_two_blob_mask():
    """Two diagonal blobs: the projection box (default, spec section 2) is
    four blocks, the rows {1, 2, 6} x the columns {0, 1, 5, 6}; the filled box
    is rows 1-6 x columns 0-6. Each is checked against a weight built by
    hand."""
    h, w = 8, 9
    target = np.zeros((1, h, w), np.float32)
    target[0, 1:3, 0:2] = 1  # blob 1: rows 1-2, columns 0-1
    target[0, 6, 5:7] = 1  # blob 2: row 6, columns 5-6
    projection = np.zeros((1, h, w))
    for y in (1, 2, 6):
        for x in (0, 1, 5, 6):
            projection[0, y, x] = 1
    filled = np.zeros((1, h, w))
    filled[0, 1:7, 0:7] = 1
    assert np.array_equal(np_box(target, 'projection'), projection)
    assert np.array_equal(np_box(target, 'filled'), filled)

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, h, w)).astype(np.float32) * 2
    sim = rng.random((1, 8, h, w)).astype(np.float32)
    losses = {}
    for box_mode, box in (('projection', projection), ('filled', filled)):
        losses[box_mode] = PairwiseAffinityLoss(
            warmup_iters=0, box_mode=box_mode)(torch.from_numpy(logits),
                                               torch.from_numpy(target),
                                               torch.from_numpy(sim)).item()
        assert losses[box_mode] == pytest.approx(
            np_pairwise(logits, target, sim, box=box), rel=1e-5)
    assert losses['projection'] == pytest.approx(
        PairwiseAffinityLoss(warmup_iters=0)(torch.from_numpy(logits),
                                             torch.from_numpy(target),
                                             torch.from_numpy(sim)).item())
    assert abs(losses['projection'] - losses['filled']) > 0.05
    with pytest.raises(ValueError, match='box_mode'):
        PairwiseAffinityLoss(box_mode='bbox')


def test_pairwise_below_threshold_is_zero_and_threshold_inclusive():
    logits = torch.randn(1, 4, 4, requires_grad=True)
    target = torch.ones(1, 4, 4)
    loss_fn = PairwiseAffinityLoss(warmup_iters=0)
    assert loss_fn(logits, target, torch.full((1, 8, 4, 4), 0.29)).item() == 0
    at_threshold = loss_fn(logits, target, torch.full((1, 8, 4, 4), 0.3))
    assert at_threshold.item() > 0
    at_threshold.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_pairwise_empty_and_zero_target():
    loss_fn = PairwiseAffinityLoss(warmup_iters=0)
    empty = torch.zeros(0, 4, 4, requires_grad=True)
    loss = loss_fn(empty, torch.zeros(0, 4, 4), torch.zeros(0, 8, 4, 4))
    assert loss.item() == 0
    loss.backward()
    logits = torch.randn(1, 4, 4, requires_grad=True)
    loss = loss_fn(logits, torch.zeros(1, 4, 4), torch.ones(1, 8, 4, 4))
    assert loss.item() == 0 and loss.requires_grad
    with pytest.raises(ValueError, match='color_similarity'):
        loss_fn(logits, torch.zeros(1, 4, 4), torch.ones(1, 4, 4, 4))


def test_pairwise_extreme_logits_are_finite():
    logits = torch.tensor([[[100., -100.], [100., -100.]]], requires_grad=True)
    loss = PairwiseAffinityLoss(
        dilation=1, warmup_iters=0)(logits, torch.ones(1, 2, 2),
                                    torch.ones(1, 8, 2, 2))
    loss.backward()
    # each pixel has 3 in-map neighbours (12 pairs in all), of which 2 cross
    # columns; each of those 8 costs -log(2 e^-100) = 100 - log 2.
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(8 * (100 - math.log(2)) / 12, rel=1e-5)


def test_pairwise_warmup(message_hub_iter):
    logits = torch.randn(2, 6, 6)
    targets = (torch.rand(2, 6, 6) > 0.5).float()
    sim = torch.rand(2, 8, 6, 6)
    full = PairwiseAffinityLoss(warmup_iters=0)(logits, targets, sim)
    loss_fn = PairwiseAffinityLoss(warmup_iters=1000)
    message_hub_iter(250)
    assert loss_fn(logits, targets, sim).item() == pytest.approx(
        0.25 * full.item(), rel=1e-6)
    message_hub_iter(5000)
    assert loss_fn(logits, targets, sim).item() == pytest.approx(
        full.item(), rel=1e-6)
    message_hub_iter(None)  # outside a runner
    assert loss_fn(logits, targets, sim).item() == 0


def full_map_pairwise(logits, targets, sim, thr=0.3, box_mode='projection'):
    """Whole-map reference with mmdet's unfold_wo_center, in float64."""
    from mmdet.models.utils import unfold_wo_center
    x = logits.double()[:, None]
    log_fg, log_bg = F.logsigmoid(x), F.logsigmoid(-x)
    log_same = torch.logaddexp(
        log_fg + unfold_wo_center(log_fg, 3, 2)[:, 0],
        log_bg + unfold_wo_center(log_bg, 3, 2)[:, 0])
    in_map = unfold_wo_center(torch.ones_like(x), 3, 2)[:, 0]
    box = torch.zeros_like(targets, dtype=torch.float64)
    for i, target in enumerate(targets):
        ys, xs = torch.nonzero(target, as_tuple=True)
        if box_mode == 'projection':
            box[i] = torch.outer(target.amax(dim=1), target.amax(dim=0)) > 0
        elif len(ys):
            box[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    weight = (sim >= thr).double() * box[:, None] * in_map
    return -(log_same * weight).sum() / weight.sum().clamp(min=1)


@pytest.mark.parametrize('box_mode', ['projection', 'filled'])
def test_pairwise_windows_match_whole_map_and_img_inds(box_mode):
    """Boxes of different sizes, at every edge, one empty target, masks
    whose projections have gaps: the windowed loss and its gradient equal
    the whole-map computation, and per-image similarity with ``img_inds``
    equals the per-instance copy."""
    torch.manual_seed(0)
    h, w = 23, 17
    targets = torch.zeros(7, h, w)
    targets[0, 0:5, 0:4] = 1  # top-left corner
    targets[1, 15:23, 10:17] = 1  # bottom-right corner
    targets[2, 8:12, 3:14] = 1
    # two pixels: filled box 2-20 x 1-9, projection box {2, 20} x {1, 9}
    targets[3, 2, 9] = targets[3, 20, 1] = 1
    targets[5, 0:23, 0:17] = 1  # whole map; target 4 is empty
    # two blobs in opposite corners, one at the bottom and right edges: the
    # projection box leaves out rows 4-18 and columns 3-13
    targets[6, 1:4, 0:3] = targets[6, 19:23, 14:17] = 1
    image_sim = torch.rand(2, 8, h, w)
    img_inds = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    logits = (torch.randn(7, h, w) * 3).requires_grad_()
    reference_logits = logits.detach().clone().requires_grad_()

    loss_fn = PairwiseAffinityLoss(warmup_iters=0, box_mode=box_mode)
    loss = loss_fn(logits, targets, image_sim, img_inds)
    loss.backward()
    reference = full_map_pairwise(reference_logits, targets,
                                  image_sim[img_inds], box_mode=box_mode)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(logits.grad, reference_logits.grad.float(),
                               rtol=1e-4, atol=1e-7)
    per_instance = loss_fn(logits.detach(), targets, image_sim[img_inds])
    assert per_instance.item() == pytest.approx(loss.item(), rel=1e-6)
    other_mode = 'filled' if box_mode == 'projection' else 'projection'
    assert abs(full_map_pairwise(logits.detach(), targets, image_sim[img_inds],
                                 box_mode=other_mode).item() -
               loss.item()) > 1e-3  # the two modes weight differently here
    with pytest.raises(ValueError, match='img_inds'):
        loss_fn(logits, targets, image_sim, img_inds[:5])


def test_pairwise_size_groups_equal_one_window():
    """Instances of very different box sizes (a pixel, thin bars, two-blob
    masks, near-full maps, one empty) of two images are computed in several
    size groups; loss and gradient equal the single-window computation
    (``group_ratio=None``) and the loop reference."""
    rng = np.random.default_rng(3)
    h, w = 20, 26
    boxes = [(0, 0, 1, 1), (5, 3, 1, 20), (2, 24, 17, 2), (0, 0, 20, 26),
             (3, 4, 14, 19), (9, 9, 4, 5), (15, 20, 5, 6), (1, 2, 2, 3)]
    targets = np.zeros((len(boxes) + 2, h, w), np.float32)
    for i, (y, x, bh, bw) in enumerate(boxes):
        targets[i, y:y + bh, x:x + bw] = 1
    targets[-2, 1:3, 0:2] = targets[-2, 12, 15:18] = 1  # two blobs
    # targets[-1] stays empty: no box, no weight
    logits = rng.normal(size=targets.shape).astype(np.float32) * 2
    sim = rng.random((2, 8, h, w)).astype(np.float32)
    img_inds = np.arange(len(targets)) % 2

    grouped = PairwiseAffinityLoss(warmup_iters=0)
    rows = torch.from_numpy(targets).amax(dim=2) > 0
    cols = torch.from_numpy(targets).amax(dim=1) > 0
    box_h = rows.shape[1] - rows.int().argmax(1) - rows.flip(1).int().argmax(1)
    box_w = cols.shape[1] - cols.int().argmax(1) - cols.flip(1).int().argmax(1)
    groups = grouped._size_groups(box_h, box_w, rows.any(dim=1))
    assert len(groups) >= 5
    assert sorted(torch.cat(groups).tolist()) == list(range(len(boxes) + 1))
    for group in groups:
        for size in (box_h[group].float(), box_w[group].float()):
            assert size.max() / size.min() < grouped.group_ratio

    results = {}
    for name, loss_fn in (('grouped', grouped),
                          ('one window', PairwiseAffinityLoss(
                              warmup_iters=0, group_ratio=None))):
        x = torch.from_numpy(logits).requires_grad_()
        loss = loss_fn(x, torch.from_numpy(targets), torch.from_numpy(sim),
                       img_inds=torch.from_numpy(img_inds))
        loss.backward()
        results[name] = (loss.item(), x.grad)
    expected = np_pairwise(logits, targets, sim[img_inds])
    assert results['grouped'][0] == pytest.approx(expected, rel=1e-5)
    assert results['one window'][0] == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(results['grouped'][1], results['one window'][1])
    assert results['grouped'][1][-1].abs().sum() == 0  # the empty instance
    with pytest.raises(ValueError, match='group_ratio'):
        PairwiseAffinityLoss(group_ratio=1.0)
