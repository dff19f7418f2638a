"""Scenes from any input (RGB-D layout, frames folders, video) with GT masks: reading, aligned resizing,
batching, synthetic scenes.

scene = load_scene(root, image_size=(168, 224))      # real capture or generated folder
scene = load_input("clip.mp4", image_width=224, gt="masks/")   # any input; depth/cameras may be None
batch = scene_to_batch(scene)                          # [1, T, V, 3, H, W] + aligned targets
generate_synthetic_scene(out_dir, SyntheticSceneConfig(seed=0))
"""

from page4d.data.batching import SceneBatch, scene_to_batch, to_first_camera_frame
from page4d.data.depth_agreement import DepthAgreement, cross_view_depth_agreement
from page4d.data.inputs import input_kind, load_input
from page4d.data.layout import SceneFormatError, SceneLayout, read_query_points
from page4d.data.resize import CropResize, check_patch_multiple, vggt_size
from page4d.data.scene import Scene, load_scene
from page4d.data.seganymo import FrameLabels, MosegTracks
from page4d.data.synthetic import (
    SyntheticScene,
    SyntheticSceneConfig,
    generate_synthetic_scene,
    render_synthetic_scene,
)

__all__ = [
    "CropResize",
    "DepthAgreement",
    "FrameLabels",
    "MosegTracks",
    "Scene",
    "SceneBatch",
    "SceneFormatError",
    "SceneLayout",
    "SyntheticScene",
    "SyntheticSceneConfig",
    "check_patch_multiple",
    "cross_view_depth_agreement",
    "generate_synthetic_scene",
    "input_kind",
    "load_input",
    "load_scene",
    "read_query_points",
    "render_synthetic_scene",
    "scene_to_batch",
    "to_first_camera_frame",
    "vggt_size",
]
