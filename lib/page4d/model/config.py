"""One `ModelConfig` decides every size of the network; presets are plain instances.

(The reference fixtures' plain-dict configurations are translated onto `ModelConfig` by the tests'
own `tests/reference_config.py`: that is test-fixture knowledge, not part of the library.)
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
    patch_embed: Literal["conv", "conv_stem", "dinov2"] = "dinov2"
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
        if self.patch_embed not in ("conv", "conv_stem", "dinov2"):
            raise ValueError(f"patch_embed must be conv, conv_stem or dinov2, got {self.patch_embed!r}")
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


# The tiny preset's patch embeddings (issue 20). Tiny-only: the 1B presets keep DINOv2 ViT-L/14.
TINY_PATCH_EMBEDS = ("conv", "conv_stem", "conv_pos")
AUTO_PATCH_EMBED = "auto"  # a value meaning: read it from the checkpoint's keys (resolve_patch_embed)


def with_tiny_patch_embed(cfg: ModelConfig, name: str) -> ModelConfig:
    """`cfg` (a tiny-sized config) with the named patch embedding.

    - `conv`: the preset's one 14x14 linear patchify. Its tokens carry no position: the aggregator's
      RoPE acts on queries and keys only, so what a token receives from its match in another view
      does not say where that match was.
    - `conv_stem`: two 3x3 convolutions in front of the patchify (`ConvStemPatchEmbed`): local,
      nonlinear features to match with.
    - `conv_pos`: DINOv2's embedding without its blocks (`DinoV2` at depth 0, no registers): the
      patchify plus a learned position table (11x11, bicubic-resized to the image's grid) and a
      LayerNorm. VGGT's patch tokens carry DINOv2's position embedding; this gives the tiny tokens one.
    """
    if name not in TINY_PATCH_EMBEDS:
        raise ValueError(f"tiny patch embedding must be one of {TINY_PATCH_EMBEDS}, got {name!r}")
    if name != "conv_pos":
        return cfg.replace(patch_embed=name, dino=None)
    dino = DinoConfig(
        depth=0,
        num_heads=cfg.num_heads,
        embed_dim=cfg.embed_dim,
        num_register_tokens=0,
        pos_embed_img_size=11 * cfg.patch_size,
    )
    return cfg.replace(patch_embed="dinov2", dino=dino)


def preset_with_patch_embed(preset_name: str, patch_embed: str = "conv") -> ModelConfig:
    """The preset's config with one of the tiny-only patch embeddings (`TINY_PATCH_EMBEDS`; weights made
    with `conv_pos`, issue 20's, need theirs named). "conv" leaves any preset as it is; another variant
    on a preset other than `tiny` is refused: the 1B presets are VGGT's, with DINOv2."""
    if patch_embed not in TINY_PATCH_EMBEDS:
        raise ValueError(f"patch embedding must be one of {TINY_PATCH_EMBEDS}, got {patch_embed!r}")
    cfg = preset(preset_name)
    if patch_embed == "conv":
        return cfg
    if preset_name != "tiny":
        raise ValueError(
            f"patch embedding {patch_embed!r} is a tiny-only variant; preset {preset_name!r} keeps its own"
        )
    return with_tiny_patch_embed(cfg, patch_embed)


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
