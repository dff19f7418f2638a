"""VGGT's alternating-attention aggregator, with PAGE-4D's mask head and masked global blocks.

Per frame: `[camera token, register tokens, patch tokens]` (P tokens). Frame blocks attend within a
frame over `[B*S, P, C]`; global blocks attend across all frames over `[B, S*P, C]`. Frame 0 gets its own
camera/register tokens (it defines the world frame). Each (frame, global) pair's outputs are
concatenated into `[B, S, P, 2C]` for the heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import RowGatedKeyBias
from .block import Block
from .config import ModelConfig
from .mask_heads import MaskHeadOutput, build_mask_head
from .patch_embed import ConvPatchEmbed, ConvStemPatchEmbed, DinoV2
from .rope import RotaryPositionEmbedding2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AggregatorOutput:
    tokens: list[torch.Tensor | None]  # one [B, S, P, 2C] tensor per block pair (None: not kept)
    patch_start_idx: int
    mask: MaskHeadOutput | None


def first_and_rest(token: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """`[1, 2, X, C]` learned tokens -> `[B*S, X, C]`: index 0 for frame 0, index 1 for frames 1..S-1."""
    first = token[:, :1].expand(batch, 1, *token.shape[2:])
    rest = token[:, 1:].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat([first, rest], dim=1).reshape(batch * frames, *token.shape[2:])


class Aggregator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        if cfg.patch_embed == "conv":
            self.patch_embed = ConvPatchEmbed(cfg.patch_size, c)
        elif cfg.patch_embed == "conv_stem":
            self.patch_embed = ConvStemPatchEmbed(cfg.patch_size, c)
        else:
            d = cfg.dino
            if d.embed_dim != c:
                raise ValueError(f"DINOv2 width {d.embed_dim} must equal aggregator embed_dim {c}")
            self.patch_embed = DinoV2(
                cfg.patch_size,
                d.embed_dim,
                d.depth,
                d.num_heads,
                d.num_register_tokens,
                d.pos_embed_img_size,
                d.init_values,
            )
        self.rope = RotaryPositionEmbedding2D(cfg.rope_freq) if cfg.rope_freq > 0 else None

        def make_block() -> Block:
            return Block(
                c, cfg.num_heads, cfg.mlp_ratio, cfg.init_values, qk_norm=cfg.qk_norm, rope=self.rope
            )

        self.frame_blocks = nn.ModuleList([make_block() for _ in range(cfg.depth)])
        self.global_blocks = nn.ModuleList([make_block() for _ in range(cfg.depth)])
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, c) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, cfg.num_register_tokens, c) * 1e-6)
        self.patch_start_idx = cfg.patch_start_idx
        if cfg.mask_head is not None:
            self.spatial_mask_head = build_mask_head(c, cfg.mask_head)
            self.masked_global_blocks = frozenset(cfg.mask_head.masked_global_blocks)
        else:
            self.spatial_mask_head = None
            self.masked_global_blocks = frozenset()
        self.register_buffer(
            "_mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "_std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 1, 3, 1, 1), persistent=False
        )
        self.gradient_checkpointing = False

    def _run(self, block: Block, x: torch.Tensor, pos, bias) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(block, x, pos, bias, use_reentrant=False)
        return block(x, pos=pos, bias=bias)

    def forward(
        self,
        images: torch.Tensor,
        stop_at_mask_head: bool = False,
        keep_layers=None,
        given_mask_logits: torch.Tensor | None = None,
    ) -> AggregatorOutput | torch.Tensor:
        """images: `[B, S, 3, H, W]` in [0, 1].

        Runs `depth / aa_block_size` groups; each group applies `aa_block_size` blocks of every kind in
        `aa_order` (frame: within each frame, global: across all frames) and records the pair of
        outputs `[B, S, P, 2C]`. The mask head runs right after the frame blocks of group
        `mask_after_block`, in float32 under autocast like the other heads; its attention bias then
        applies in the global blocks listed in `masked_global_blocks`, from that same group on.
        `keep_layers` (indices of block pairs; None = all) bounds memory on long sequences: the other
        entries of `tokens` are None.

        `stop_at_mask_head=True` returns the `[B, S, P, C]` tokens the mask head reads and stops there:
        when only the head trains, they are fixed and can be computed once per clip.

        `given_mask_logits` `[B, S, h, w]`: dynamic logits that drive the attention bias instead of the
        head's prediction (the head does not run): GT masks for an oracle, or a user's own masks. The
        bias is the one the head would apply for those logits (`bias_from_dynamic_logits`).
        """
        b, s, _, h, w = images.shape
        grid_h, grid_w = h // self.cfg.patch_size, w // self.cfg.patch_size
        tokens = self._embed(images)  # [B*S, P, C]
        p, c = tokens.shape[1], tokens.shape[2]
        pos = None
        if self.rope is not None:
            pos = patch_positions(b * s, grid_h, grid_w, self.patch_start_idx, images.device)

        mask: MaskHeadOutput | None = None
        bias: RowGatedKeyBias | None = None  # the mask head's, once it has run
        outputs = []
        group_size = self.cfg.aa_block_size
        for group in range(self.cfg.depth // group_size):
            frame_out: list[torch.Tensor] = []
            global_out: list[torch.Tensor] = []
            for kind in self.cfg.aa_order:
                if kind == "frame":
                    start = group * group_size + len(frame_out)
                    tokens, block_outs = self._process_frame_attention(tokens, b, s, p, c, start, pos)
                    frame_out += block_outs
                    if self.spatial_mask_head is not None and group == self.cfg.mask_head.mask_after_block:
                        if stop_at_mask_head:
                            return self._mask_head_input(tokens, b, s, p, c)
                        mask = self._mask(tokens, b, s, p, c, (grid_h, grid_w), given_mask_logits)
                        every_row = getattr(self.spatial_mask_head, "all_rows", False)
                        bias = mask.attention_bias(self.patch_start_idx, p, every_row)
                else:
                    start = group * group_size + len(global_out)
                    tokens, block_outs = self._process_global_attention(tokens, b, s, p, c, start, pos, bias)
                    global_out += block_outs
            for f, g in zip(frame_out, global_out, strict=True):
                keep = keep_layers is None or len(outputs) in keep_layers
                outputs.append(torch.cat([f, g], dim=-1) if keep else None)
        if stop_at_mask_head:
            raise ValueError("stop_at_mask_head=True needs a model with a mask head")
        return AggregatorOutput(tokens=outputs, patch_start_idx=self.patch_start_idx, mask=mask)

    def _mask(
        self, tokens: torch.Tensor, b: int, s: int, p: int, c: int, grid: tuple[int, int], given
    ) -> MaskHeadOutput:
        """The mask head's output on `tokens` (float32 even under autocast, like the other heads), or the
        bias for `given` dynamic logits `[B, S, h, w]`."""
        head = self.spatial_mask_head
        if given is not None:
            if tuple(given.shape) != (b, s, *grid):
                raise ValueError(
                    f"given_mask_logits must be [B, S, h, w] = {[b, s, *grid]}, got {list(given.shape)}"
                )
            return head.bias_from_dynamic_logits(given.float(), p, self.patch_start_idx)
        head_in = self._mask_head_input(tokens, b, s, p, c)
        if torch.is_autocast_enabled(tokens.device.type):
            head_in = head_in.float()
        with torch.autocast(tokens.device.type, enabled=False):
            return head(head_in, self.patch_start_idx, *grid)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised patches with the camera and register tokens in front: `[B*S, P, C]`."""
        b, s, _, h, w = images.shape
        x = ((images - self._mean.to(images.dtype)) / self._std.to(images.dtype)).reshape(b * s, 3, h, w)
        patches = self.patch_embed(x)
        return torch.cat(
            [first_and_rest(self.camera_token, b, s), first_and_rest(self.register_token, b, s), patches],
            dim=1,
        )

    def _process_frame_attention(
        self, tokens: torch.Tensor, b: int, s: int, p: int, c: int, start: int, pos: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frame blocks `start, start + 1, ...` (`aa_block_size` of them), each token attending within its
        own frame over `[B*S, P, C]`. Returns the tokens and every block's output as `[B, S, P, C]`."""
        tokens = tokens.reshape(b * s, p, c)
        outs = []
        for idx in range(start, start + self.cfg.aa_block_size):
            tokens = self._run(self.frame_blocks[idx], tokens, pos, None)
            outs.append(tokens.reshape(b, s, p, c))
        return tokens, outs

    def _process_global_attention(
        self,
        tokens: torch.Tensor,
        b: int,
        s: int,
        p: int,
        c: int,
        start: int,
        pos: torch.Tensor | None,
        bias: RowGatedKeyBias | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Global blocks `start, start + 1, ...` over all frames' tokens `[B, S*P, C]`; the mask head's
        `bias` only in `masked_global_blocks`. Returns the tokens and each block's output `[B, S, P, C]`."""
        tokens = tokens.reshape(b, s * p, c)
        gpos = pos.reshape(b, s * p, 2) if pos is not None else None
        outs = []
        for idx in range(start, start + self.cfg.aa_block_size):
            block_bias = bias if idx in self.masked_global_blocks else None
            tokens = self._run(self.global_blocks[idx], tokens, gpos, block_bias)
            outs.append(tokens.reshape(b, s, p, c))
        return tokens, outs

    def _mask_head_input(self, tokens: torch.Tensor, b: int, s: int, p: int, c: int) -> torch.Tensor:
        """The `[B, S, P, C]` tokens the mask head reads (detached as in the originals, unless configured)."""
        head_in = tokens.reshape(b, s, p, c)
        return head_in.detach() if self.cfg.mask_head.detach_input else head_in
