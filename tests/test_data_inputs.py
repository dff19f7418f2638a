"""Every input format as one `Scene` (frames folder, per-view frame folders, video, RGB-D scene), the GT
mask readers (DAVIS-style PNGs, SegAnyMo's output folder) and every loud input check of issue 11."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from own_clip import GAP, H, T, W, make_clip, write_palette_png
from page4d.data import scene_to_batch
from page4d.data.annotations import read_annotation_png
from page4d.data.inputs import input_kind, load_input
from page4d.data.layout import SceneFormatError
from page4d.data.seganymo import read_mask_png
from page4d.data.video import read_video
from page4d.inference.loading import first_views
from page4d.model import build_model, load_checkpoint, preset
from page4d.model.checkpoint import CheckpointError
from PIL import Image


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("own_clip"))


def _gt(clip, v: int, t: int) -> np.ndarray:
    return np.array(Image.open(clip / "gt" / f"cam{v}" / f"{t:05d}.png")) > 0


def test_input_kinds_are_recognised(clip):
    assert input_kind(clip / "rig" / "cam0") == "frames"
    assert input_kind(clip / "rig") == "multiview_frames"
    assert input_kind(clip / "clip.mp4") == "video"
    assert input_kind(clip / "scene") == "rgbd_scene"
    with pytest.raises(SceneFormatError, match="not found"):
        input_kind(clip / "nope")
    (clip / "empty").mkdir(exist_ok=True)
    with pytest.raises(SceneFormatError, match="no frames"):
        input_kind(clip / "empty")


def test_frames_folder_with_davis_gt_and_a_frame_without_mask(clip):
    scene = load_input(clip / "rig" / "cam0", image_size=(56, 84), gt=clip / "gt" / "cam0")
    assert scene.images.shape == (T, 1, 3, 56, 84) and scene.transform.src_hw == (H, W)
    assert (
        scene.depths is None
        and scene.extrinsics is None
        and "no depth or cameras" in scene.geometry_missing_reason
    )
    assert scene.frame_name(2, 0) == "00002" and scene.view_name(0) == "cam0"
    assert scene.mask_valid[:, 0].tolist() == [t != GAP for t in range(T)]
    assert f"cam0/{GAP:05d}" in scene.mask_missing_reason
    assert scene.masks.shape == (T, 1, 56, 84) and float(scene.masks[0].sum()) > 0
    batch = scene_to_batch(scene)  # mask supervision / evaluation only need images + masks
    assert batch.depths is None and batch.masks.shape == (1, T, 1, 56, 84)
    assert batch.geometry_missing_reason == scene.geometry_missing_reason


def test_frames_folder_every_max_frames_and_native_size(clip):
    scene = load_input(clip / "rig" / "cam0", every=2, max_frames=2)
    assert [n[0] for n in scene.frame_names] == ["00000", "00002"]
    assert (
        scene.image_size == (H, W)
        and scene.masks is None
        and scene.mask_missing_reason == "no GT masks given"
    )
    width = load_input(clip / "rig" / "cam0", image_width=56, max_frames=1)
    assert width.image_size == (42, 56)  # VGGT's rule: W fixed, H = 56 * 70 / 98 rounded to 14


def test_multiview_frames_folder_is_time_aligned(clip):
    scene = load_input(clip / "rig", image_size=(70, 98), gt=clip / "gt")
    assert scene.images.shape == (T, 2, 3, 70, 98) and scene.view_names == ["cam0", "cam1"]
    for v in (0, 1):
        src = np.array(Image.open(clip / "rig" / f"cam{v}" / "00004.png"))
        assert torch.equal((scene.images[4, v] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(src))
        assert torch.equal(scene.masks[1, v].bool(), torch.from_numpy(_gt(clip, v, 1)))
    assert scene.mask_valid[GAP].tolist() == [False, False] and int(scene.mask_valid.sum()) == 2 * (T - 1)
    assert first_views(scene, 1).images.shape[1] == 1


def test_multiview_views_with_different_frame_counts_are_refused(clip, tmp_path):
    shutil.copytree(clip / "rig", tmp_path / "rig")
    (tmp_path / "rig" / "cam1" / "00005.png").unlink()
    with pytest.raises(SceneFormatError, match="different frame counts"):
        load_input(tmp_path / "rig")


def test_video_decodes_every_frame_named_like_davis(clip):
    frames, stems = read_video(clip / "clip.mp4")
    assert frames.shape == (T, H, W, 3) and stems == [f"{t:05d}" for t in range(T)]
    src = np.asarray(Image.open(clip / "rig" / "cam0" / "00001.png")).astype(float)
    assert np.abs(frames[1].astype(float) - src).mean() < 12  # lossy codec, same picture
    scene = load_input(clip / "clip.mp4", image_width=98, every=2, max_frames=2, gt=clip / "gt" / "cam0")
    assert scene.frame_names == [["00000"], ["00002"]] and scene.view_names == ["clip"]
    assert scene.mask_valid.all() and scene.geometry_missing_reason.startswith("video")


def test_rgbd_scene_input_keeps_its_geometry(clip):
    scene = load_input(clip / "scene", image_width=56, every=3)
    assert scene.times == [0, 3] and scene.depths is not None and scene.geometry_missing_reason is None
    assert (
        scene.image_size == (42, 56) and scene.frame_name(1, 0) == "time_03" and scene.view_name(1) == "view1"
    )
    with pytest.raises(ValueError, match="RGB-D scene"):
        load_input(clip / "scene", gt=clip / "gt")


def test_seganymo_output_folder_is_found_by_sequence_name(clip, tmp_path):
    seq = tmp_path / "sam2" / "initial_preds" / "cam0"
    seq.mkdir(parents=True)
    (tmp_path / "sam2" / "initial_preds" / "other").mkdir()
    for t in range(T):
        if t != GAP:  # SAM2 object ids 1, 2 (any id > 0 is dynamic)
            write_palette_png(seq / f"{t:05d}.png", _gt(clip, 0, t).astype(np.uint8) * 2)
    scene = load_input(clip / "rig" / "cam0", gt=tmp_path / "sam2")
    assert scene.mask_valid[:, 0].tolist() == [t != GAP for t in range(T)]
    assert torch.equal(scene.masks[0, 0].bool(), torch.from_numpy(_gt(clip, 0, 0)))
    with pytest.raises(SceneFormatError, match="found sequences"):
        load_input(clip / "clip.mp4", gt=tmp_path / "sam2")  # sequence "clip" absent, two to choose from


def test_gt_folder_matching_no_frame_is_an_error(clip, tmp_path):
    (tmp_path / "gt").mkdir()
    write_palette_png(tmp_path / "gt" / "frame_0001.png", np.zeros((H, W), np.uint8))
    with pytest.raises(SceneFormatError, match="no mask PNG is named like a frame"):
        load_input(clip / "rig" / "cam0", gt=tmp_path / "gt")


# --------------------------------------------------------------------------------------------------
# loud input checks
# --------------------------------------------------------------------------------------------------
def test_model_refuses_images_outside_0_1():
    model = build_model(preset("tiny")).eval()
    with pytest.raises(ValueError, match=r"in \[0, 1\].*divide by 255"):
        model(torch.rand(1, 1, 3, 28, 28) * 255)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model(torch.rand(1, 1, 3, 28, 28) - 0.5)


@pytest.mark.parametrize("entry", ["time-02", "file time_02", "loop time_02"])
def test_misnamed_or_non_folder_time_entries_are_errors(clip, tmp_path, entry):
    root = tmp_path / "scene"
    shutil.copytree(clip / "scene", root)
    images = root / "images"
    kind, _, name = entry.rpartition(" ")
    if kind == "file":
        shutil.rmtree(images / name)
        (images / name).write_text("not a folder")
        match = "not a folder"
    elif kind == "loop":
        shutil.rmtree(images / name)
        os.symlink(images / name, images / name)  # a link to itself
        match = "not a folder"
    else:
        (images / "time_02").rename(images / name)
        match = "not a time folder name"
    with pytest.raises(SceneFormatError, match=match) as err:
        load_input(root)
    assert name in str(err.value)


def test_rgb_masks_say_so(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    with pytest.raises(SceneFormatError, match="mask saved as RGB"):
        read_annotation_png(path, (4, 5))
    with pytest.raises(SceneFormatError, match="mask saved as RGB"):
        read_mask_png(path, (4, 5))


def test_a_mask_of_another_size_names_the_mask(clip, tmp_path):
    shutil.copytree(clip / "gt" / "cam0", tmp_path / "gt")
    write_palette_png(tmp_path / "gt" / "00002.png", np.zeros((H + 2, W), np.uint8))
    with pytest.raises(SceneFormatError, match="00002.png: mask size"):
        load_input(clip / "rig" / "cam0", gt=tmp_path / "gt")


def test_non_torch_checkpoints_name_the_file(tmp_path):
    model = build_model(preset("tiny"))
    for name, data in (("notes.txt", b"hello\n"), ("empty.pt", b""), ("broken.pt", b"PK\x03\x04junk")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"{name}: not a torch checkpoint"):
            load_checkpoint(model, tmp_path / name)


def test_an_rgb_image_of_the_wrong_size_is_named(clip, tmp_path):
    shutil.copytree(clip / "scene", tmp_path / "scene")
    bad = tmp_path / "scene" / "images" / "time_04" / "view1.png"
    Image.fromarray(np.zeros((H, W + 14, 3), np.uint8)).save(bad)
    with pytest.raises(SceneFormatError, match="time_04/view1.png: size"):
        load_input(tmp_path / "scene")
    shutil.copytree(clip / "rig" / "cam0", tmp_path / "frames")
    Image.fromarray(np.zeros((H, W + 14, 3), np.uint8)).save(tmp_path / "frames" / "00003.png")
    with pytest.raises(SceneFormatError, match="00003.png: size.*00000.png"):
        load_input(tmp_path / "frames")


def test_mask_supervision_trains_on_a_clip_without_geometry(clip):
    from page4d.train import TrainConfig, train

    scene = load_input(clip / "rig", image_size=(70, 98), gt=clip / "gt")
    cfg = TrainConfig(
        preset="tiny", arm="bce", steps=3, trains="everything", clip_times=2, device="cpu",
        loss_overrides={"use_camera": False, "use_depth": False, "use_point": False},
    )  # fmt: skip
    _, history = train(cfg, scene, progress=False)
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)


# --------------------------------------------------------------------------------------------------
# non-finite values and frame order (issue 22)
# --------------------------------------------------------------------------------------------------
def test_a_checkpoint_with_nan_or_inf_weights_names_the_tensors_and_the_file(tmp_path):
    model = build_model(preset("tiny"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["camera_head.trunk.0.norm1.weight"][3] = float("nan")
    torch.save(state, tmp_path / "one_nan.pt")
    with pytest.raises(CheckpointError, match=r"one_nan.pt: 1 tensor\(s\) hold NaN or inf values: "
                       r"camera_head.trunk.0.norm1.weight \(1 of \d+\)"):  # fmt: skip
        load_checkpoint(model, tmp_path / "one_nan.pt")
    state["aggregator.camera_token"].view(-1)[:2] = float("-inf")
    torch.save({"model": {k: v.half() for k, v in state.items()}}, tmp_path / "inf_fp16.pt")
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\).*aggregator.camera_token \(2 of"):
        load_checkpoint(model, tmp_path / "inf_fp16.pt", strict=False)
    assert torch.isfinite(model.state_dict()["camera_head.trunk.0.norm1.weight"]).all()  # nothing loaded


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_model_refuses_non_finite_pixels(bad):
    model = build_model(preset("tiny")).eval()
    images = torch.rand(1, 2, 3, 28, 28)
    images[0, 1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match=r"1 NaN or inf values \(the first at index \[0, 1, 2, 5, 7\]\)"):
        model(images)


def _numbered_frames(folder, stems):
    """Frames whose red channel is 10 x the number in their name, so the order can be read back."""
    folder.mkdir(parents=True)
    for stem in stems:
        Image.fromarray(np.full((14, 14, 3), 10 * int(stem), np.uint8)).save(folder / f"{stem}.png")


def test_frames_numbered_without_padding_are_in_number_order(tmp_path):
    _numbered_frames(tmp_path / "clip", [str(k) for k in range(1, 13)])
    scene = load_input(tmp_path / "clip")
    assert [names[0] for names in scene.frame_names] == [str(k) for k in range(1, 13)]
    red = (scene.images[:, 0, 0, 0, 0] * 255).round().int().tolist()
    assert red == [10 * k for k in range(1, 13)]
    for view in ("cam2", "cam10"):
        _numbered_frames(tmp_path / "rig" / view, [str(k) for k in range(1, 4)])
    assert load_input(tmp_path / "rig").view_names == ["cam2", "cam10"]


def test_frame_names_with_the_same_number_are_refused(tmp_path):
    _numbered_frames(tmp_path / "clip", ["1", "01", "2"])
    with pytest.raises(SceneFormatError, match=r"clip: frames '01.png' and '1.png' give the same number"):
        load_input(tmp_path / "clip")
