"""One `ModelConfig` decides every size of the network; presets are plain instances.

`config_from_reference` maps the plain-dict configuration stored in the reference fixtures (written by
the original code's constructor arguments) onto `ModelConfig`, so tests build exactly what produced them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class DinoConfig:
    """DINOv2 ViT with registers used as VGGT's patch embed (ViT-L/14, 4 registers for the 1B model)."""

    depth: int = 24
    num_heads: int = 16
    embed_dim: int = 1024
    num_register_tokens: int = 4
    pos_embed_img_size: int = 518
    init_values: float = 1.0


@dataclass
class CameraHeadConfig:
    """Camera head: trunk over camera tokens with adaLN-modulated iterative refinement."""

    trunk_depth: int = 4
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float = 0.01
    num_iterations: int = 4
    trans_act: str = "linear"
    quat_act: str = "linear"
    fl_act: str = "relu"


@dataclass
class DPTConfig:
    """Dense (DPT) heads for depth and world points; `intermediate_layer_idx` picks aggregator layers."""

    features: int = 256
    out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    point_activation: str = "inv_log"
    point_conf_activation: str = "expp1"
    depth_activation: str = "exp"
    depth_conf_activation: str = "expp1"
    enable_depth: bool = True
    enable_point: bool = True
    frames_chunk_size: int = 8  # frames decoded at once (bounds memory on long sequences); 0 = all


@dataclass
class TrackHeadConfig:
    """Track head: a feature-only DPT at half resolution plus the VGGSfM/CoTracker-style tracker."""

    features: int = 128
    out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23)
    down_ratio: int = 2
    iters: int = 4
    hidden_size: int = 384
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    predict_conf: bool = True
    tracker_depth: int = 6
    latent_dim: int = 128


@dataclass
class MaskHeadConfig:
    """PAGE-4D dynamic-mask head and where its attention bias applies.

    variant `fin10` (MV_PAGE4D's `SpatialMaskHead_IMP`): depthwise conv stack, `key_bias = soft_mask_bias *
    clamp(alpha * sigmoid(-m / tau), 0, 1)` on patch keys. variant `official` (PAGE-4D release):
    standardised features, pointwise mixing, `m = sigmoid(x + mean) - 0.5` with gain `scale` x a cosine
    hold schedule. In both the bias touches only camera/register query rows of `masked_global_blocks`.
    `detach_input=True` is the originals' behaviour (mask supervision trains only the head).
    `alpha_init` / `tau_init` initialise `log` parameters read through `softplus`, so the starting alpha
    is `softplus(log alpha_init) = ln(1 + alpha_init)`: 0.693 for the default 1.0 (tau: 1.099 for 2.0).
    """

    variant: Literal["fin10", "official"] = "fin10"
    mask_after_block: int = 7
    masked_global_blocks: tuple[int, ...] = tuple(range(8, 24))
    detach_input: bool = True
    # fin10
    alpha_init: float = 1.0
    tau_init: float = 2.0
    soft_mask_bias: float = -0.5
    # official
    pointwise_channels: int = 256
    scale: float = 64.0
    hold_start: int = 2**31 - 1
    hold_end: int = 2**31 - 1


@dataclass
class ModelConfig:
    """Sizes of the aggregator and which heads exist (B batch, S frames, P tokens/frame, C channels)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    num_register_tokens: int = 4
    patch_size: int = 14
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01
    aa_order: tuple[str, ...] = ("frame", "global")
    aa_block_size: int = 1
    patch_embed: Literal["conv", "dinov2"] = "dinov2"
    dino: DinoConfig | None = field(default_factory=DinoConfig)
    camera_head: CameraHeadConfig | None = field(default_factory=CameraHeadConfig)
    dpt: DPTConfig | None = field(default_factory=DPTConfig)
    track_head: TrackHeadConfig | None = field(default_factory=TrackHeadConfig)
    mask_head: MaskHeadConfig | None = None

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.depth % self.aa_block_size:
            raise ValueError(f"depth {self.depth} not divisible by aa_block_size {self.aa_block_size}")
        if set(self.aa_order) - {"frame", "global"}:
            raise ValueError(f"aa_order may only contain 'frame' and 'global', got {self.aa_order}")
        if self.patch_embed == "dinov2" and self.dino is None:
            raise ValueError("patch_embed='dinov2' needs a DinoConfig in `dino`")
        if self.mask_head is not None:
            if self.aa_block_size != 1 or tuple(self.aa_order) != ("frame", "global"):
                raise ValueError("mask heads are defined for aa_order=('frame','global') and aa_block_size=1")
            m = self.mask_head
            if not 0 <= m.mask_after_block < self.depth:
                raise ValueError(f"mask_after_block {m.mask_after_block} outside 0..{self.depth - 1}")
            bad = [i for i in m.masked_global_blocks if not m.mask_after_block <= i < self.depth]
            if bad:
                raise ValueError(
                    f"masked_global_blocks {bad} must lie in {m.mask_after_block}..{self.depth - 1} "
                    "(the bias exists only after the mask head ran)"
                )
        for head in (self.dpt, self.track_head):
            if head is not None and any(not 0 <= i < self.depth for i in head.intermediate_layer_idx):
                raise ValueError(
                    f"intermediate_layer_idx {head.intermediate_layer_idx} outside 0..{self.depth - 1}"
                )

    @property
    def patch_start_idx(self) -> int:
        return 1 + self.num_register_tokens

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _vggt_1b() -> ModelConfig:
    return ModelConfig()


def _page4d_fin10_1b() -> ModelConfig:
    return ModelConfig(
        mask_head=MaskHeadConfig(
            variant="fin10", mask_after_block=7, masked_global_blocks=tuple(range(8, 24))
        )
    )


def _page4d_official_1b() -> ModelConfig:
    return ModelConfig(
        mask_head=MaskHeadConfig(
            variant="official", mask_after_block=9, masked_global_blocks=tuple(range(10, 20)), scale=64.0
        )
    )


def _tiny() -> ModelConfig:
    """CPU preset: conv patch embed, 6 block pairs of width 64; fin10 mask after pair 2, bias in 3..5."""
    return ModelConfig(
        embed_dim=64,
        depth=6,
        num_heads=4,
        patch_embed="conv",
        dino=None,
        camera_head=CameraHeadConfig(trunk_depth=2, num_heads=4),
        dpt=DPTConfig(features=32, out_channels=(16, 32, 64, 64), intermediate_layer_idx=(1, 3, 4, 5)),
        track_head=None,
        mask_head=MaskHeadConfig(variant="fin10", mask_after_block=2, masked_global_blocks=(3, 4, 5)),
    )


PRESETS = {
    "tiny": _tiny,
    "vggt_1b": _vggt_1b,
    "page4d_fin10_1b": _page4d_fin10_1b,
    "page4d_official_1b": _page4d_official_1b,
}


def preset(name: str, **changes: Any) -> ModelConfig:
    """A fresh `ModelConfig` for a named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]().replace(**changes) if changes else PRESETS[name]()


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
