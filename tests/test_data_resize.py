"""CropResize on hand-made arrays: the crop rule, the filters per modality and the pixel-centre convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from page4d.data import CropResize, check_patch_multiple, vggt_size
from page4d.geometry import project_points
from PIL import Image


@pytest.mark.parametrize(
    ("out_hw", "crop"),
    [
        ((168, 224), (0, 0, 240, 320)),  # same 4:3 aspect: no crop
        ((224, 294), (0, 2, 240, 315)),  # slightly wider target ratio -> 5 columns cut, centred
        ((224, 224), (0, 40, 240, 240)),  # square -> 80 columns cut, 40 each side
        ((112, 154), (3, 0, 233, 320)),  # wider-than-source target -> rows cut
        ((392, 518), (0, 1, 240, 317)),  # VGGT size, upsampling
    ],
)
def test_centre_crop_rule(out_hw, crop):
    t = CropResize.centered((240, 320), out_hw)
    assert (t.top, t.left, t.crop_h, t.crop_w) == crop
    sy, sx = t.scale
    assert abs(sy / sx - 1) < 0.01  # never squash beyond the one-pixel rounding of the crop


def _exact_area_1d(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Reference box filter by supersampling: repeat each pixel n_out/g times, average blocks of n_in/g."""
    n_in = x.shape[axis]
    g = np.gcd(n_in, n_out)
    fine = np.repeat(x, n_out // g, axis=axis)
    shape = list(fine.shape)
    shape[axis : axis + 1] = [n_out, n_in // g]
    return fine.reshape(shape).mean(axis=axis + 1)


def test_area_filter_is_exact_area_average():
    rng = np.random.default_rng(0)
    src = rng.random((3, 240, 320))
    for out_hw in [(168, 224), (224, 224), (112, 154), (56, 70)]:
        t = CropResize.centered((240, 320), out_hw)
        crop = src[:, t.top : t.top + t.crop_h, t.left : t.left + t.crop_w]
        reference = _exact_area_1d(_exact_area_1d(crop, out_hw[0], axis=1), out_hw[1], axis=2)
        ours = t.images(torch.from_numpy(src).float()).double().numpy()
        assert np.abs(ours - reference).max() < 1e-5, out_hw


def test_2x_area_matches_pil_box():
    """The README's 2x copy was made with PIL's BOX filter; at 2x ours is the same 2x2 mean."""
    src = np.random.default_rng(2).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    ours = CropResize.centered((240, 320), (120, 160)).images(
        torch.from_numpy(src).permute(2, 0, 1).float() / 255
    )
    pil = np.asarray(Image.fromarray(src).resize((160, 120), Image.BOX), dtype=np.float64)
    diff = np.abs(ours.permute(1, 2, 0).double().numpy() * 255 - pil)
    assert diff.max() <= 1.0 + 1e-3  # PIL rounds in 8-bit fixed point; ours stays in float


def test_exact_2x_area_is_block_mean():
    x = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 4, 6) / 100
    out = CropResize.centered((4, 6), (2, 3)).images(x)
    expected = x.reshape(1, 2, 2, 3, 2).mean(dim=(2, 4))
    assert torch.allclose(out, expected, atol=1e-6)


def test_upsampling_is_bicubic_and_clamped():
    x = torch.rand(2, 3, 20, 30)
    t = CropResize.centered((20, 30), (40, 60))
    ours = t.images(x)
    reference = torch.nn.functional.interpolate(x, size=(40, 60), mode="bicubic", align_corners=False)
    assert torch.allclose(ours, reference.clamp(0, 1), atol=1e-5)
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0


def test_depth_median_pooling_values():
    # Four 2x2 blocks -> one output pixel each (2x downscale of a 2x4 frame to 1x2 ... built as 4x4 -> 2x2).
    d = torch.tensor(
        [
            [5.0, 0.0, 1.0, 2.0],
            [7.0, 0.0, 3.0, 4.0],
            [9.0, 0.0, 5.0, 6.0],
            [0.0, 0.0, 7.0, 0.0],
        ]
    )
    out = CropResize.centered((4, 4), (2, 2)).depth(d)
    # {5, 7} -> lower median 5; {1, 2, 3, 4} -> 2; {9} of 4 -> invalid; {5, 6, 7} -> 6.
    assert torch.equal(out, torch.tensor([[5.0, 2.0], [0.0, 6.0]]))


def test_depth_never_mixes_zeros_or_blends_edges():
    rng = np.random.default_rng(1)
    d = np.where(rng.random((60, 80)) < 0.5, 1.0, 10.0).astype(np.float32)  # a depth edge everywhere
    d[rng.random((60, 80)) < 0.2] = 0.0  # holes
    for out_hw in [(28, 42), (42, 56), (84, 112), (56, 56)]:
        out = CropResize.centered((60, 80), out_hw).depth(torch.from_numpy(d))
        assert set(torch.unique(out).tolist()) <= {0.0, 1.0, 10.0}, out_hw
        assert 0.6 < float((out > 0).float().mean()) < 1.0


def test_depth_nearest_mode_keeps_samples():
    d = torch.rand(30, 40) + 1
    out = CropResize.centered((30, 40), (14, 28)).depth(d, mode="nearest")
    assert bool(torch.isin(out, d).all())


def test_mask_nearest_and_area():
    m = torch.zeros(4, 4)
    m[0, 1] = 1.0  # one dynamic pixel in the top-left 2x2 block
    t = CropResize.centered((4, 4), (2, 2))
    # Nearest picks the source pixel whose centre is closest: floor((i + 0.5) * 2) = 2i + 1.
    assert torch.equal(t.masks(m), torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    m[1, 1] = 1.0
    assert torch.equal(t.masks(m), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(t.masks(m, mode="area"), torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    ids = torch.randint(0, 3, (4, 4))
    assert t.masks(ids).dtype == torch.int64


def test_intrinsics_follow_the_pixels():
    """A 3D point projects onto the transformed pixel position of its source projection."""
    K = torch.tensor([[300.0, 0.0, 150.0], [0.0, 310.0, 118.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    E = torch.eye(3, 4, dtype=torch.float64)
    points = torch.rand(50, 3, dtype=torch.float64) * torch.tensor([2.0, 2.0, 3.0]) + torch.tensor(
        [-1, -1, 2]
    )
    xy, _ = project_points(points, K, E)
    for out_hw in [(168, 224), (224, 224), (112, 154), (392, 518)]:
        t = CropResize.centered((240, 320), out_hw)
        xy_new, _ = project_points(points, t.intrinsics(K), E)
        assert torch.allclose(xy_new, t.points(xy), atol=1e-9)
    # Pixel-centre convention: after a 2x downscale, output pixel 0's centre is source coordinate 0.5.
    half = CropResize.centered((240, 320), (120, 160))
    assert torch.allclose(half.points(torch.tensor([0.5, 0.5])), torch.tensor([0.0, 0.0]))
    K_half = half.intrinsics(K)
    assert torch.allclose(K_half[0], torch.tensor([150.0, 0.0, (150.0 + 0.5) / 2 - 0.5], dtype=torch.float64))


def test_size_rules():
    assert check_patch_multiple((168, 224)) == (168, 224)
    for bad in [(100, 224), (168, 0), (170, 224)]:
        with pytest.raises(ValueError, match="multiples of 14"):
            check_patch_multiple(bad)
    assert vggt_size((480, 640)) == (392, 518)
    assert vggt_size((1080, 1920)) == (294, 518)
    with pytest.raises(ValueError, match="trailing size"):
        CropResize.centered((240, 320), (168, 224)).depth(torch.zeros(10, 240, 321))
