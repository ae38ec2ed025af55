"""MaskContrast loss against hand-computed values on tiny tensors."""
import math
import os.path as osp
import sys

import pytest
import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from projects.maskcontrast.maskcontrast import (MaskContrastLoss, PrototypeMemoryBank, labels_to_masks,  # noqa: E402
                                                mask_contrastive_loss, mask_prototypes)


def two_pixel_case():
    """One image, D=2, a 1x2 map: pixel 0 = [1, 0] in mask 0, pixel 1 = [0, 1] in mask 1."""
    query = torch.tensor([[1., 0.], [0., 1.]]).t().reshape(1, 2, 1, 2)  # (B, D, H, W)
    masks = torch.tensor([[[[True, False]], [[False, True]]]])  # (1, 2, 1, 2)
    protos = torch.tensor([[[1., 0.], [0., 1.]]])  # (1, 2, 2): key prototypes of masks 0 and 1
    valid = torch.tensor([[True, True]])
    return query, masks, protos, valid


def test_loss_in_batch_only_hand_computed():
    query, masks, protos, valid = two_pixel_case()
    # each pixel: logits [1, 0] / T for (positive, other mask) -> -log(e^(1/T) / (e^(1/T) + 1))
    for t in (1.0, 0.5):
        expected = math.log(1 + math.exp(-1 / t))  # 0.313262 (T=1), 0.126928 (T=0.5)
        got = mask_contrastive_loss(query, masks, protos, valid, temperature=t)
        assert got.item() == pytest.approx(expected, abs=1e-6)
    got = mask_contrastive_loss(query, masks, protos, valid, temperature=1.0)
    assert got.item() == pytest.approx(0.313262, abs=1e-6)


def test_loss_with_memory_bank_hand_computed():
    query, masks, protos, valid = two_pixel_case()
    memory = torch.tensor([[-1., 0.]])
    # pixel 0: logits [1, 0, -1] -> log(1 + e^-1 + e^-2) = 0.407606
    # pixel 1: logits [0, 1, 0] (positive is the 2nd) -> log(1 + 2 e^-1) = 0.551444
    expected = (math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(1 + 2 * math.exp(-1))) / 2
    assert expected == pytest.approx(0.479525, abs=1e-6)
    got = mask_contrastive_loss(query, masks, protos, valid, memory, temperature=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    module = MaskContrastLoss(temperature=1.0, loss_weight=2.0)
    assert module(query, masks, protos, valid, memory).item() == pytest.approx(2 * expected, abs=1e-6)


def test_loss_skips_masks_missing_in_key_view():
    query, masks, protos, valid = two_pixel_case()
    valid = torch.tensor([[True, False]])
    protos = protos * valid.unsqueeze(-1)
    # pixel 1's mask is absent from the key view: the pixel is skipped and that prototype is no
    # negative; pixel 0 has only its positive -> loss 0; with memory [-1, 0]: log(1 + e^-2)
    assert mask_contrastive_loss(query, masks, protos, valid, temperature=1.0).item() == pytest.approx(0, abs=1e-6)
    got = mask_contrastive_loss(query, masks, protos, valid, torch.tensor([[-1., 0.]]), temperature=1.0)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    # nothing valid -> 0 with a gradient path
    q = query.clone().requires_grad_(True)
    zero = mask_contrastive_loss(q, masks, protos, torch.zeros(1, 2, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0 and q.grad is not None


def test_loss_negatives_across_images():
    # two images, one mask each: image 0's pixel [1, 0], image 1's pixel [0, 1]; each image's own
    # prototype is its positive, the other image's its negative -> log(1 + e^-1) per pixel
    query = torch.tensor([[1., 0.], [0., 1.]]).reshape(2, 2, 1, 1)
    masks = torch.ones(2, 1, 1, 1, dtype=torch.bool)
    protos = torch.tensor([[[1., 0.]], [[0., 1.]]])
    got = mask_contrastive_loss(query, masks, protos, torch.ones(2, 1, dtype=torch.bool), temperature=1.0)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # swapping the prototypes makes every positive the worse logit: log(1 + e^1)
    got = mask_contrastive_loss(query, masks, protos.flip(0), torch.ones(2, 1, dtype=torch.bool), temperature=1.0)
    assert got.item() == pytest.approx(math.log(1 + math.e), abs=1e-6)


def test_loss_gradient_pulls_towards_positive():
    query, masks, protos, valid = two_pixel_case()
    q = torch.nn.functional.normalize(torch.tensor([[0.8, 0.6], [0.6, 0.8]]).t().reshape(1, 2, 1, 2), dim=1)
    q.requires_grad_(True)
    mask_contrastive_loss(q, masks, protos, valid, temperature=0.5).backward()
    # descent direction -grad moves pixel 0 towards [1, 0] (x up, y down), pixel 1 towards [0, 1]
    assert -q.grad[0, 0, 0, 0] > 0 and -q.grad[0, 1, 0, 0] < 0
    assert -q.grad[0, 1, 0, 1] > 0 and -q.grad[0, 0, 0, 1] < 0


def test_mask_prototypes_and_labels_to_masks():
    emb = torch.tensor([[1., 0.], [0., 1.], [0.6, 0.8]]).t().reshape(1, 2, 1, 3)
    labels = torch.tensor([[[1, 1, 0]]])  # pixels 0, 1 in proposal 1; pixel 2 none
    masks = labels_to_masks(labels, num_masks=2)
    assert masks.shape == (1, 2, 1, 3) and masks[0, 0].tolist() == [[True, True, False]] and not masks[0, 1].any()
    protos, valid = mask_prototypes(emb, masks)
    assert valid.tolist() == [[True, False]]
    s = 1 / math.sqrt(2)
    assert protos[0, 0].tolist() == pytest.approx([s, s], abs=1e-6)  # mean [0.5, 0.5], normalised
    assert protos[0, 1].tolist() == [0., 0.]


def test_memory_bank_fifo():
    bank = PrototypeMemoryBank(3, 2)
    assert bank.negatives().shape == (0, 2)
    bank.enqueue(torch.tensor([[2., 0.], [0., 3.]]))
    assert bank.negatives().tolist() == [[1., 0.], [0., 1.]]
    bank.enqueue(torch.tensor([[-1., 0.], [0., -1.]]))  # wraps: the oldest entry is overwritten
    assert bank.negatives().tolist() == [[0., -1.], [0., 1.], [-1., 0.]]
    assert int(bank.ptr) == 1 and int(bank.count) == 3
