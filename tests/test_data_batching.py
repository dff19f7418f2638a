"""scene_to_batch: model-shaped input with targets that stay aligned, and explicit 'no ground truth'."""

from __future__ import annotations

import shutil

import pytest
import torch
from page4d.data import (
    SyntheticSceneConfig,
    generate_synthetic_scene,
    load_scene,
    scene_to_batch,
    to_first_camera_frame,
)
from page4d.data.seganymo import MASK_FRAMES
from page4d.geometry import depth_to_world_points, project_points

CONFIG = SyntheticSceneConfig(seed=11, times=4, views=3, height=70, width=84, tracks_per_mover=8)


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    return generate_synthetic_scene(tmp_path_factory.mktemp("batching") / "scene", CONFIG)


@pytest.fixture(scope="module")
def scene(scene_root):
    return load_scene(scene_root)


def test_batch_shapes_and_dtypes(scene):
    batch = scene_to_batch(scene)
    assert batch.images.shape == (1, 4, 3, 3, 70, 84) and batch.images.dtype == torch.float32
    assert batch.depths.shape == (1, 4, 3, 70, 84) and batch.depth_valid.dtype == torch.bool
    assert torch.equal(batch.depth_valid, batch.depths > 0)
    assert batch.intrinsics.shape == (1, 4, 3, 3, 3) and batch.extrinsics.shape == (1, 4, 3, 3, 4)
    assert batch.masks.shape == (1, 4, 3, 70, 84) and batch.mask_valid.shape == (1, 4, 3)
    assert batch.times == [0, 1, 2, 3] and batch.views == [0, 1, 2] and batch.world_frame == "scene"
    assert torch.equal(batch.images[0], scene.images) and torch.equal(batch.masks[0], scene.masks)


def test_selecting_times_and_views(scene):
    batch = scene_to_batch(scene, times=[3, 1], views=[2])
    assert batch.images.shape == (1, 2, 1, 3, 70, 84)
    assert batch.times == [3, 1] and batch.views == [2]
    assert torch.equal(batch.depths[0, 0, 0], scene.depths[3, 2])
    assert torch.equal(batch.extrinsics[0, 1, 0], scene.extrinsics[1, 2])
    with pytest.raises(ValueError, match=r"time ids \[9\]"):
        scene_to_batch(scene, times=[9])


def test_first_camera_frame_keeps_geometry(scene):
    batch = scene_to_batch(scene, world_frame="first_camera")
    E = batch.extrinsics[0].double()
    assert torch.allclose(E[0, 0], torch.eye(3, 4, dtype=torch.float64), atol=1e-6)
    # Pixels of view 1 at t=2, unprojected in either world frame, land on the same pixels of view 2.
    K1, K2 = scene.intrinsics[2, 1].double(), scene.intrinsics[2, 2].double()
    depth = scene.depths[2, 1].double()
    projected = []
    for extrinsics in (scene.extrinsics.double(), E):
        world = depth_to_world_points(depth, K1, extrinsics[2, 1]).reshape(-1, 3)
        xy, z = project_points(world, K2, extrinsics[2, 2])
        projected.append(xy[z > 0.1])
    assert torch.allclose(projected[0], projected[1], atol=1e-3)
    assert not torch.allclose(scene.extrinsics[2, 1].double(), E[2, 1], atol=1e-2)
    direct = to_first_camera_frame(scene.extrinsics[None].double())
    assert torch.allclose(direct, E[None], atol=1e-6)


def test_missing_masks_stay_none(scene_root, tmp_path):
    no_masks = load_scene(scene_root, seganymo_dir=tmp_path / "absent")
    batch = scene_to_batch(no_masks)
    assert batch.masks is None and not bool(batch.mask_valid.any())
    assert "does not exist" in batch.mask_missing_reason


def test_partly_missing_masks_are_flagged(scene_root, tmp_path):
    seganymo = tmp_path / "SegAnyMo"
    shutil.copytree(scene_root / "SegAnyMo", seganymo)
    (seganymo / MASK_FRAMES / "view_1" / "002.png").unlink()
    batch = scene_to_batch(load_scene(scene_root, seganymo_dir=seganymo))
    expected = torch.ones(1, 4, 3, dtype=torch.bool)
    expected[0, 2, 1] = False
    assert torch.equal(batch.mask_valid, expected)
    assert "view_1/002.png" in batch.mask_missing_reason
    subset = scene_to_batch(load_scene(scene_root, seganymo_dir=seganymo), times=[0, 1])
    assert bool(subset.mask_valid.all()) and subset.mask_missing_reason is None


def test_size_must_suit_the_model(tmp_path):
    root = generate_synthetic_scene(
        tmp_path / "odd", SyntheticSceneConfig(seed=0, times=1, views=1, height=50, width=60)
    )
    scene = load_scene(root)
    with pytest.raises(ValueError, match="multiples of 14"):
        scene_to_batch(scene)
    assert scene_to_batch(load_scene(root, image_size=(42, 56))).images.shape == (1, 1, 1, 3, 42, 56)
