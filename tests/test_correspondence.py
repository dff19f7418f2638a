"""The cross-view patch-matching term: its GT matches follow the geometry (a sideways step moves every
patch by the step's pixels, an occluder removes what it hides, a real rig's matches come back to where
they started), and its loss and accuracy reward tokens that find their matches."""

from __future__ import annotations

import math

import pytest
import torch
from page4d.experiments.camera_probe import PATCH, ProbeConfig, make_batch
from page4d.losses.correspondence import correspondence_loss, match_accuracy, patch_matches

H, W, F = 56, 70, 100.0  # a 4 x 5 patch grid


def _two_cameras(step_px: int, depth: float = 2.0) -> dict[str, torch.Tensor]:
    """A wall at `depth` seen by frame 0 and by frame 1 stepped right so the wall moves `step_px` left."""
    k = torch.tensor([[F, 0.0, (W - 1) / 2], [0.0, F, (H - 1) / 2], [0.0, 0.0, 1.0]])
    second = torch.eye(3, 4)
    second[0, 3] = -step_px * depth / F  # camera centre at +x: content moves left by step_px
    return {
        "depths": torch.full((1, 2, H, W), depth),
        "intrinsics": k.expand(1, 2, 3, 3).clone(),
        "extrinsics": torch.stack([torch.eye(3, 4), second])[None],
    }


def _patch(row: int, col: int) -> int:
    return row * (W // PATCH) + col


def test_a_sideways_step_of_two_patches_matches_each_patch_two_columns_over():
    clip = _two_cameras(2 * PATCH)
    m = patch_matches(clip["depths"], clip["intrinsics"], clip["extrinsics"], PATCH)
    assert m.shape == (1, 2, 2, 20) and (m[0, 0, 0] == -1).all() and (m[0, 1, 1] == -1).all()
    for row in range(4):
        for col in range(5):
            forward = _patch(row, col - 2) if col >= 2 else -1
            backward = _patch(row, col + 2) if col + 2 < 5 else -1
            assert int(m[0, 0, 1, _patch(row, col)]) == forward
            assert int(m[0, 1, 0, _patch(row, col)]) == backward


def test_what_an_occluder_hides_in_the_other_frame_has_no_match():
    clip = _two_cameras(2 * PATCH)
    clip["depths"][0, 1, :, :PATCH] = 1.0  # frame 1 sees something nearer in its first patch column
    m = patch_matches(clip["depths"], clip["intrinsics"], clip["extrinsics"], PATCH)
    for row in range(4):
        assert int(m[0, 0, 1, _patch(row, 2)]) == -1  # lands behind the occluder
        assert int(m[0, 0, 1, _patch(row, 3)]) == _patch(row, 1)
        assert int(m[0, 1, 0, _patch(row, 0)]) == -1  # the occluder is not on frame 0's wall
    clip["depths"][0, 0, PATCH // 2, :] = 0.0  # the centre row of frame 0's patch row 0: no depth
    m = patch_matches(clip["depths"], clip["intrinsics"], clip["extrinsics"], PATCH)
    assert (m[0, 0, 1, :5] == -1).all() and int(m[0, 0, 1, _patch(1, 3)]) == _patch(1, 1)


def test_a_real_rig_s_matches_come_back_to_where_they_started():
    """The card's rigs (4 views, wide gaps): a patch matched into another view and back lands within one
    patch of where it started (nearly always: a patch's centre stands for all of it, and at grazing
    angles one patch of the other view covers several), and a good share of the pairs see each other's
    surfaces."""
    batch = make_batch(range(3), ProbeConfig(task="rigs"), step=None)
    m = patch_matches(batch["depths"], batch["intrinsics"], batch["extrinsics"], PATCH)
    gw = 154 // PATCH
    hits = returned = near = 0
    for b, s, t, i in (m >= 0).nonzero().tolist():
        back = int(m[b, t, s, int(m[b, s, t, i])])
        if back >= 0:
            hits += 1
            apart = max(abs(back // gw - i // gw), abs(back % gw - i % gw))
            returned += apart <= 1
            near += apart <= 2
    assert hits > 200 and returned / hits > 0.9 and near / hits > 0.97
    assert 0.2 < float((m >= 0).float().mean()) < 0.9  # the diagonal and the hidden parts are -1


def test_tokens_that_carry_their_surface_find_their_matches_and_shuffled_ones_do_not():
    clip = _two_cameras(2 * PATCH)
    m = patch_matches(clip["depths"], clip["intrinsics"], clip["extrinsics"], PATCH)
    surface = torch.randn(4, 7, 32, generator=torch.Generator().manual_seed(0))  # wall cells, 2 spare cols
    tokens = torch.stack([surface[:, :5].reshape(20, 32), surface[:, 2:].reshape(20, 32)])[None]
    tokens = tokens.requires_grad_()
    loss, count = correspondence_loss(tokens, m)
    assert count == 2 * 4 * 3 and match_accuracy(tokens, m) == 1.0 and float(loss.detach()) < 0.05
    loss.backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    forward_only = torch.tensor([[[False, True], [False, False]]])  # frame 0 into frame 1 alone
    wrong_back = tokens.detach().clone()
    wrong_back[0, 1] = wrong_back[0, 1].roll(1, dims=0)  # frame 1's tokens moved: both ways break ...
    assert match_accuracy(wrong_back, m) < 0.5
    assert match_accuracy(wrong_back, m, forward_only) < 0.5  # ... and so does the forward direction
    assert match_accuracy(tokens, m, forward_only) == 1.0
    assert math.isnan(match_accuracy(tokens, m, torch.zeros(1, 2, 2, dtype=torch.bool)))
    shuffled = tokens.detach()[:, :, torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    assert match_accuracy(shuffled, m) < 0.5 and float(correspondence_loss(shuffled, m)[0]) > 1.0


def test_no_match_is_an_explicit_count_of_zero_and_bad_shapes_are_named():
    tokens = torch.randn(1, 2, 20, 8, requires_grad=True)
    loss, count = correspondence_loss(tokens, torch.full((1, 2, 2, 20), -1))
    assert count == 0 and float(loss.detach()) == 0.0 and loss.requires_grad
    assert math.isnan(match_accuracy(tokens, torch.full((1, 2, 2, 20), -1)))
    with pytest.raises(ValueError, match=r"\[B, S, S, P\]"):
        correspondence_loss(tokens, torch.full((1, 2, 20), -1))
    clip = _two_cameras(PATCH)
    with pytest.raises(ValueError, match="intrinsics"):
        patch_matches(clip["depths"], clip["intrinsics"][:, :1], clip["extrinsics"], PATCH)
