"""The full network: aggregator + camera / depth / point / track heads (+ PAGE-4D mask head).

`PAGE4DModel(images)` returns VGGT's prediction dict plus `mask_logits` when a mask head exists.
Inputs `[B, S, 3, H, W]` give per-frame outputs `[B, S, ...]` and `mask_logits [B, S, 1, h, w]`;
multi-view inputs `[B, T, V, 3, H, W]` are flattened time-outer / view-inner (`s = t*V + v`) and every
per-frame output comes back as `[B, T, V, ...]`, with `mask_logits [B, T, V, h, w]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import ModelConfig
from .dpt_head import DPTHead
from .track_head import TrackHead

LOW_PRECISION = (torch.float16, torch.bfloat16)
PER_FRAME_KEYS = (
    "pose_enc",
    "depth",
    "depth_conf",
    "world_points",
    "world_points_conf",
    "track",
    "vis",
    "conf",
)


def validate_images(images: torch.Tensor, patch_size: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (4, 5, 6):
        raise ValueError(
            "images must be [S,3,H,W], [B,S,3,H,W] or [B,T,V,3,H,W]; "
            f"got rank {images.ndim} {tuple(images.shape)}"
        )
    c, h, w = images.shape[-3:]
    if c != 3:
        raise ValueError(
            f"images must have 3 (RGB) channels in dim -3, got {c} in shape {tuple(images.shape)}"
        )
    if h % patch_size or w % patch_size:
        raise ValueError(f"image height and width must be multiples of {patch_size}, got H={h}, W={w}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    # A NaN compares False both ways, so it would pass the range check below and turn every output NaN.
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        first = [int(i) for i in (~finite).nonzero()[0]]
        raise ValueError(
            f"images {list(images.shape)} hold {int((~finite).sum())} NaN or inf values (the first at index "
            f"{first}); images must be finite, in [0, 1]"
        )
    # 0..255 floats would pass every check above and give silently meaningless predictions.
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (0..255 pixel values? divide by 255)" if hi > 1.0 else ""
        raise ValueError(f"images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")


class PAGE4DModel(nn.Module):
    """VGGT (no mask head) or PAGE-4D (fin10 / official mask head); attribute names match the checkpoints."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim_in = 2 * cfg.embed_dim
        self.aggregator = Aggregator(cfg)
        self.camera_head = CameraHead(dim_in, cfg.camera_head) if cfg.camera_head is not None else None
        self.point_head = self.depth_head = None
        if cfg.dpt is not None:
            d = cfg.dpt

            def dense_head(output_dim: int, activation: str, conf_activation: str) -> DPTHead:
                return DPTHead(
                    dim_in,
                    cfg.patch_size,
                    d.features,
                    d.out_channels,
                    d.intermediate_layer_idx,
                    output_dim=output_dim,
                    activation=activation,
                    conf_activation=conf_activation,
                    frames_chunk_size=d.frames_chunk_size,
                )

            if d.enable_point:
                self.point_head = dense_head(4, d.point_activation, d.point_conf_activation)
            if d.enable_depth:
                self.depth_head = dense_head(2, d.depth_activation, d.depth_conf_activation)
        self.track_head = None
        if cfg.track_head is not None:
            self.track_head = TrackHead(dim_in, cfg.patch_size, cfg.track_head)

    def forward(
        self,
        images: torch.Tensor,
        query_points: torch.Tensor | None = None,
        return_internals: bool = False,
        given_mask_logits: torch.Tensor | None = None,
    ) -> dict:
        """Predict cameras, depth, points (tracks) and the dynamic-mask logits of a clip.

        images: `[B, S, 3, H, W]` (or `[S, 3, H, W]`) or multi-view `[B, T, V, 3, H, W]` in [0, 1], H and W
            multiples of 14. Multi-view input runs as `S = T*V` frames (`s = t*V + v`) and every
            per-frame output below comes back with `[B, T, V]` in place of `[B, S]`.
        query_points: `[B, N, 2]` (or `[N, 2]`) pixel coordinates (x, y) in the first frame; only used
            by the track head.
        given_mask_logits: `[B, S, h, w]` (multi-view `[B, T, V, h, w]`) dynamic logits that drive the
            attention bias instead of the mask head's prediction (an oracle with GT masks, or your own
            masks; see `logits_from_masks`); `mask_logits` then returns them.

        Returns a dict (h = H/14, w = W/14, P tokens per frame, C = embed_dim):
            pose_enc: `[B, S, 9]` camera after the last refinement iteration: translation (3),
                quaternion xyzw (4), fov_h, fov_w of the world-to-camera pose (`absT_quaR_FoV`); the
                world is the camera of frame 0 (t=0, v=0).
            pose_enc_list: list of `[B, S, 9]`, pose_enc after each refinement iteration (last = pose_enc).
            depth: `[B, S, H, W, 1]` z-depth per pixel; depth_conf: `[B, S, H, W]` its confidence (1 + exp).
            world_points: `[B, S, H, W, 3]` 3D point per pixel in the frame of camera 0;
                world_points_conf: `[B, S, H, W]` its confidence (1 + exp).
            track: `[B, S, N, 2]` query points tracked into every frame (last iteration); track_list:
                one such tensor per iteration; vis / conf: `[B, S, N]` visibility and confidence. Only
                with a track head and `query_points`.
            mask_logits: `[B, S, 1, h, w]` (multi-view: `[B, T, V, h, w]`) dynamic logit per patch;
                `sigmoid` = P(dynamic) = the suppression the attention applies. Only with a mask head.
        With `return_internals` also:
            aggregated_tokens_list: one `[B, S, P, 2C]` tensor per block pair, [frame | global] tokens
                (never reshaped to `[B, T, V]`).
            patch_start_idx: index of the first patch token (camera + register tokens come before).
            mask_head: the `MaskHeadOutput` (None without a mask head): raw_logits `[B*S, 1, h, w]` the raw
                conv output m (original sign); head_input `[B*S, C, h, w]` the patch features fed to the
                head; dynamic_logits `[B, S, 1, h, w]` mask_logits before the `[B, T, V]` split;
                query_gain `[B, S*P]` per query row gain r_i (camera/register rows only); key_bias
                `[B, S*P]` per key additive bias c_j (patch keys only).
        """
        validate_images(images, self.cfg.patch_size)
        if images.ndim == 4:
            images = images.unsqueeze(0)
        multiview = images.shape[:3] if images.ndim == 6 else None
        if multiview is not None:
            b, t, v = multiview
            images = images.reshape(b, t * v, *images.shape[3:])
        if query_points is not None:
            if query_points.ndim == 2:
                query_points = query_points.unsqueeze(0)
            if (
                query_points.ndim != 3
                or query_points.shape[-1] != 2
                or query_points.shape[0] != images.shape[0]
            ):
                raise ValueError(
                    f"query_points must be [B, N, 2] with B={images.shape[0]}, got "
                    f"{tuple(query_points.shape)}"
                )

        if given_mask_logits is not None:
            if self.aggregator.spatial_mask_head is None:
                raise ValueError("given_mask_logits needs a model with a mask head (its bias applies them)")
            given_mask_logits = given_mask_logits.reshape(
                images.shape[0], images.shape[1], *given_mask_logits.shape[-2:]
            )
        keep = None if return_internals else self.head_layers()
        agg = self.aggregator(images, keep_layers=keep, given_mask_logits=given_mask_logits)
        tokens = agg.tokens
        # As in VGGT, the heads run in float32 even under autocast (the DPT `exp`, the camera FoV).
        if torch.is_autocast_enabled(images.device.type):
            tokens = [t.float() if t is not None and t.dtype in LOW_PRECISION else t for t in tokens]
        with torch.autocast(images.device.type, enabled=False):
            pred = self._heads(tokens, images, agg.patch_start_idx, query_points)
        if agg.mask is not None:
            pred["mask_logits"] = agg.mask.dynamic_logits
        if return_internals:
            pred["aggregated_tokens_list"] = agg.tokens
            pred["patch_start_idx"] = agg.patch_start_idx
            pred["mask_head"] = agg.mask
        if multiview is not None:
            pred = _to_multiview(pred, *multiview)
        return pred

    def head_layers(self) -> frozenset[int]:
        """Aggregator layers some head reads (the camera head: the last; DPT / track: their four)."""
        layers = {self.cfg.depth - 1}
        for head in (self.cfg.dpt, self.cfg.track_head):
            if head is not None:
                layers.update(head.intermediate_layer_idx)
        return frozenset(layers)

    def _heads(self, tokens: list, images: torch.Tensor, patch_start_idx: int, query_points) -> dict:
        pred: dict = {}
        if self.camera_head is not None:
            pose_list = self.camera_head(tokens)
            pred["pose_enc"] = pose_list[-1]
            pred["pose_enc_list"] = pose_list
        if self.depth_head is not None:
            pred["depth"], pred["depth_conf"] = self.depth_head(tokens, images, patch_start_idx)
        if self.point_head is not None:
            pred["world_points"], pred["world_points_conf"] = self.point_head(tokens, images, patch_start_idx)
        if self.track_head is not None and query_points is not None:
            track_list, vis, conf = self.track_head(tokens, images, patch_start_idx, query_points)
            pred["track"], pred["track_list"], pred["vis"], pred["conf"] = (
                track_list[-1],
                track_list,
                vis,
                conf,
            )
        return pred


def _to_multiview(pred: dict, b: int, t: int, v: int) -> dict:
    """Reshape per-frame outputs `[B, T*V, ...]` to `[B, T, V, ...]`; `mask_logits` drops its channel dim."""
    out = dict(pred)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, t, v, *x.shape[2:])

    for key in PER_FRAME_KEYS:
        if key in out:
            out[key] = split(out[key])
    for key in ("pose_enc_list", "track_list"):
        if key in out:
            out[key] = [split(x) for x in out[key]]
    if "mask_logits" in out:
        out["mask_logits"] = split(out["mask_logits"][:, :, 0])
    return out


def upsample_mask_logits(mask_logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample patch-grid logits `[..., h, w]` (or `[B,S,1,h,w]`) to `[..., H, W]`.

    Logits (not probabilities) are interpolated, so thresholding at 0 stays consistent with p = 0.5.
    """
    if mask_logits.ndim < 3:
        raise ValueError(f"mask_logits must have at least 3 dims [..., h, w], got {tuple(mask_logits.shape)}")
    lead = mask_logits.shape[:-2]
    flat = mask_logits.reshape(-1, 1, *mask_logits.shape[-2:])
    up = F.interpolate(flat, size=tuple(image_hw), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *image_hw)


def logits_from_masks(masks: torch.Tensor, patch_size: int, saturation: float = 8.0) -> torch.Tensor:
    """Dynamic logits on the patch grid from masks `[..., H, W]` (1 = dynamic, soft values allowed):
    the dynamic fraction f of each patch as `logit(f)`, clipped to +-`saturation` (a fully dynamic
    patch is suppressed as hard as the head's sigmoid allows, a static one not at all). `[..., h, w]`."""
    lead, (h, w) = masks.shape[:-2], masks.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"masks {list(masks.shape)}: H and W must be multiples of {patch_size}")
    frac = F.avg_pool2d(masks.reshape(-1, 1, h, w).float(), patch_size).reshape(
        *lead, h // patch_size, w // patch_size
    )
    return torch.logit(frac.clamp(0.0, 1.0), eps=1e-6).clamp(-saturation, saturation)


def build_model(config: ModelConfig) -> PAGE4DModel:
    """Build the network described by `config` (random weights; load a checkpoint separately)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(config).__name__}")
    return PAGE4DModel(config)
