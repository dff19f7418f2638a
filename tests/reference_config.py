"""The reference fixtures' configurations as `ModelConfig`s (test helper, not part of the library).

Each fixture in ../shared/fixtures stores the original code's constructor arguments as a plain dict
(see its README); `config_from_reference` maps that dict onto `ModelConfig`, so tests build exactly the
network that produced the fixture's outputs, and refuse a field they do not understand.
"""

from __future__ import annotations

from typing import Any

from page4d.model.config import (
    CameraHeadConfig,
    DinoConfig,
    DPTConfig,
    MaskHeadConfig,
    ModelConfig,
    TrackHeadConfig,
)


def config_from_reference(ref: dict[str, Any]) -> ModelConfig:
    """Translate a reference fixture's `config` dict (see shared/fixtures/README.md) into a `ModelConfig`."""
    kind = ref.get("kind")
    if kind not in ("vggt", "page4d_mask", "page4d_official"):
        raise ValueError(f"reference config has unknown kind {kind!r}")
    dino = None
    if ref["patch_embed"] == "dinov2":
        d = ref["dino_patch_embed"]
        dino = DinoConfig(
            depth=d["depth"],
            num_heads=d["num_heads"],
            embed_dim=d["embed_dim"],
            num_register_tokens=d["num_register_tokens"],
            pos_embed_img_size=d["pos_embed_img_size"],
            init_values=d["init_values"],
        )
    cam = ref.get("camera_head")
    camera = None
    if cam is not None:
        if cam["pose_encoding_type"] != "absT_quaR_FoV":
            raise ValueError(f"unsupported pose encoding {cam['pose_encoding_type']!r}")
        if cam["dim_in"] != 2 * ref["embed_dim"]:
            raise ValueError(f"camera_head.dim_in {cam['dim_in']} != 2 * embed_dim {ref['embed_dim']}")
        camera = CameraHeadConfig(
            trunk_depth=cam["trunk_depth"],
            num_heads=cam["num_heads"],
            mlp_ratio=cam["mlp_ratio"],
            init_values=cam["init_values"],
            num_iterations=4,  # not a constructor argument of the original head: its forward default
            trans_act=cam["trans_act"],
            quat_act=cam["quat_act"],
            fl_act=cam["fl_act"],
        )
    dpt_ref = ref.get("dpt_heads")
    dpt = None
    if dpt_ref is not None:
        if dpt_ref["point"]["output_dim"] != 4 or dpt_ref["depth"]["output_dim"] != 2:
            raise ValueError("reference DPT heads must have output_dim 4 (points) and 2 (depth)")
        dpt = DPTConfig(
            features=dpt_ref["features"],
            out_channels=tuple(dpt_ref["out_channels"]),
            intermediate_layer_idx=tuple(dpt_ref["intermediate_layer_idx"]),
            point_activation=dpt_ref["point"]["activation"],
            point_conf_activation=dpt_ref["point"]["conf_activation"],
            depth_activation=dpt_ref["depth"]["activation"],
            depth_conf_activation=dpt_ref["depth"]["conf_activation"],
        )
    trk_ref = ref.get("track_head")
    track = None
    if trk_ref is not None:
        fe = trk_ref["feature_extractor"]
        if fe.get("pos_embed", False):
            raise ValueError("the track feature extractor has no position embedding in VGGT")
        track = TrackHeadConfig(
            features=trk_ref["features"],
            out_channels=tuple(fe["out_channels"]),
            intermediate_layer_idx=tuple(fe["intermediate_layer_idx"]),
            down_ratio=fe["down_ratio"],
            iters=trk_ref["iters"],
            hidden_size=trk_ref["hidden_size"],
            stride=trk_ref["stride"],
            corr_levels=trk_ref["corr_levels"],
            corr_radius=trk_ref["corr_radius"],
            predict_conf=trk_ref["predict_conf"],
            tracker_depth=trk_ref["tracker_depth"],
            latent_dim=trk_ref["latent_dim"],
        )
    mask_ref = ref.get("mask_head")
    mask = None
    if mask_ref is not None:
        variant = mask_ref["variant"]
        expected = {"page4d_mask": "fin10", "page4d_official": "official"}.get(kind)
        if variant != expected:
            raise ValueError(f"kind {kind!r} with mask variant {variant!r}")
        common = dict(
            variant=variant,
            mask_after_block=mask_ref["mask_after_block"],
            masked_global_blocks=tuple(mask_ref["masked_global_blocks"]),
        )
        if variant == "fin10":
            mask = MaskHeadConfig(
                **common,
                alpha_init=mask_ref["alpha_init"],
                tau_init=mask_ref["tau_init"],
                soft_mask_bias=mask_ref["soft_mask_bias"],
            )
        else:
            mask = MaskHeadConfig(
                **common,
                pointwise_channels=mask_ref["pointwise_channels"],
                scale=mask_ref["scale"],
                hold_start=mask_ref["hold_start"],
                hold_end=mask_ref["hold_end"],
            )
    elif kind != "vggt":
        raise ValueError(f"kind {kind!r} needs a mask_head entry")
    return ModelConfig(
        embed_dim=ref["embed_dim"],
        depth=ref["depth"],
        num_heads=ref["num_heads"],
        num_register_tokens=ref["num_register_tokens"],
        patch_size=ref["patch_size"],
        mlp_ratio=ref["mlp_ratio"],
        qk_norm=ref["qk_norm"],
        rope_freq=ref["rope_freq"],
        init_values=ref["init_values"],
        aa_order=tuple(ref["aa_order"]),
        aa_block_size=ref["aa_block_size"],
        patch_embed=ref["patch_embed"],
        dino=dino,
        camera_head=camera,
        dpt=dpt,
        track_head=track,
        mask_head=mask,
    )
