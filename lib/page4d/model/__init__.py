"""VGGT / PAGE-4D network: config, builder, checkpoint loading and mask-logit helpers."""

from .checkpoint import (
    MASK_HEAD_PREFIX,
    SHIPPED_CHECKPOINTS,
    CheckpointError,
    LoadReport,
    load_checkpoint,
    read_state_dict,
    resolve_checkpoint,
)
from .config import (
    PRESETS,
    CameraHeadConfig,
    DinoConfig,
    DPTConfig,
    MaskHeadConfig,
    ModelConfig,
    TrackHeadConfig,
    preset,
)
from .mask_heads import MaskHeadOutput
from .network import PAGE4DModel, build_model, logits_from_masks, upsample_mask_logits

__all__ = [
    "MASK_HEAD_PREFIX",
    "PRESETS",
    "SHIPPED_CHECKPOINTS",
    "CameraHeadConfig",
    "CheckpointError",
    "DPTConfig",
    "DinoConfig",
    "LoadReport",
    "MaskHeadConfig",
    "MaskHeadOutput",
    "ModelConfig",
    "PAGE4DModel",
    "TrackHeadConfig",
    "build_model",
    "load_checkpoint",
    "preset",
    "read_state_dict",
    "resolve_checkpoint",
    "logits_from_masks",
    "upsample_mask_logits",
]
