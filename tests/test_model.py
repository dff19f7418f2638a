"""Model behaviour beyond the fixtures: presets vs manifests, shapes, the sign rule end to end, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES
from page4d.model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    preset,
    upsample_mask_logits,
)
from page4d.model.attention import (
    RowGatedKeyBias,
    augmented_channel_sdpa,
    explicit_biased_attention,
    masked_sdpa,
)
from page4d.model.checkpoint import compare_state_dict, patch_embed_of
from page4d.model.config import TINY_PATCH_EMBEDS, preset_with_patch_embed, with_tiny_patch_embed

MANIFESTS = {
    "vggt_1b": "vggt_1b_state_dict_manifest.json",
    "page4d_fin10_1b": "page4d_mask_1b_state_dict_manifest.json",
    "page4d_official_1b": "page4d_official_1b_state_dict_manifest.json",
}


def meta_model(name: str):
    with torch.device("meta"):
        return build_model(preset(name))


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / MANIFESTS[name]).read_text())


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_presets_match_released_state_dict_manifests(name):
    ours = {k: list(v.shape) for k, v in meta_model(name).state_dict().items()}
    ref = manifest(name)
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}
    if name == "vggt_1b":
        assert len(ref) == 1797 and sum(torch.Size(s).numel() for s in ref.values()) == 1_256_537_516


def test_vggt_checkpoint_into_page4d_preset_leaves_exactly_the_mask_head_missing():
    model = meta_model("page4d_fin10_1b")
    vggt_state = {k: torch.empty(s, device="meta") for k, s in manifest("vggt_1b").items()}
    report = compare_state_dict(model, vggt_state)
    assert report.only_mask_head_missing
    assert sorted(report.missing) == sorted(
        k for k in manifest("page4d_fin10_1b") if "spatial_mask_head" in k
    )
    assert "no PAGE-4D mask head" in report.summary()


def tiny(**changes):
    torch.manual_seed(0)
    return build_model(preset("tiny", **changes)).eval()


def test_checkpoint_formats_and_loud_failures(tmp_path):
    src = tiny()
    dst = build_model(preset("tiny")).eval()
    path = tmp_path / "checkpoint_5.pt"
    torch.save({"model": src.state_dict(), "epoch": 5}, path)
    assert load_checkpoint(dst, path).ok
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    raw = tmp_path / "model.pt"
    torch.save(src.state_dict(), raw)
    assert load_checkpoint(dst, raw).ok

    foreign = dict(src.state_dict())
    foreign["decoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="unexpected in checkpoint: decoder.extra.weight"):
        load_checkpoint(dst, foreign)
    bad_shape = dict(src.state_dict())
    bad_shape["camera_head.embed_pose.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError, match="shape mismatch camera_head.embed_pose.weight"):
        load_checkpoint(dst, bad_shape)

    plain = build_model(preset("tiny", mask_head=None))
    with pytest.raises(CheckpointError, match="missing from checkpoint"):
        load_checkpoint(dst, plain.state_dict())
    report = load_checkpoint(dst, plain.state_dict(), allow_missing_mask_head=True)
    assert report.only_mask_head_missing and len(report.missing) == 8


def test_multiview_input_returns_time_view_layout_in_order():
    model = tiny()
    torch.manual_seed(1)
    images = torch.rand(1, 2, 3, 3, 28, 42)  # B, T, V
    with torch.no_grad():
        mv = model(images)
        flat = model(images.reshape(1, 6, 3, 28, 42))
    assert mv["mask_logits"].shape == (1, 2, 3, 2, 3)
    assert flat["mask_logits"].shape == (1, 6, 1, 2, 3)
    assert mv["depth"].shape == (1, 2, 3, 28, 42, 1) and mv["pose_enc"].shape == (1, 2, 3, 9)
    for t in range(2):
        for v in range(3):
            s = t * 3 + v
            assert torch.equal(mv["mask_logits"][0, t, v], flat["mask_logits"][0, s, 0])
            assert torch.equal(mv["depth"][0, t, v], flat["depth"][0, s])


def test_plain_vggt_has_no_mask_logits_and_no_mask_parameters():
    model = tiny(mask_head=None)
    with torch.no_grad():
        out = model(torch.rand(1, 2, 3, 28, 28))
    assert "mask_logits" not in out
    assert not any("spatial_mask_head" in k for k in model.state_dict())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 2, 3, 30, 28), "multiples of 14"),
        ((1, 2, 3, 28, 29), "multiples of 14"),
        ((2, 3, 28, 28)[1:], "rank 3"),
        ((1, 1, 2, 2, 3, 28, 28), "rank 7"),
        ((1, 2, 1, 28, 28), "3 \\(RGB\\) channels"),
    ],
)
def test_bad_images_raise_with_a_reason(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny()(torch.rand(*shape))


def test_masked_sdpa_equals_explicit_dense_bias_and_augmented_channel():
    torch.manual_seed(0)
    b, h, n, d = 2, 3, 40, 16
    q, k, v = (torch.randn(b, h, n, d, dtype=torch.float64) for _ in range(3))
    rows = torch.tensor([0, 1, 20, 21])
    bias = RowGatedKeyBias(
        rows=rows,
        row_gain=torch.rand(b, 4, dtype=torch.float64) * 64,
        key_bias=torch.rand(b, n, dtype=torch.float64) - 0.5,
    )
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.dense(n))
    assert torch.allclose(masked_sdpa(q, k, v, bias), dense, rtol=0, atol=1e-12)
    assert torch.allclose(augmented_channel_sdpa(q, k, v, bias), dense, rtol=0, atol=1e-12)
    # the CUDA training path for the gated rows (bias with a gradient) is the same math
    explicit = explicit_biased_attention(q.float(), k.float(), v.float(), bias.dense(n).float())
    assert torch.allclose(explicit.double(), dense, atol=1e-5)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[rows] = False
    plain = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(masked_sdpa(q, k, v, bias)[:, :, untouched], plain[:, :, untouched])
    assert not torch.allclose(dense[:, :, rows], plain[:, :, rows])


def camera_attention_to_patches(model, images, patch_idx):
    """Mean softmax weight the camera-token query rows of the first masked global block give to given keys."""
    agg = model.aggregator
    block = agg.global_blocks[model.cfg.mask_head.masked_global_blocks[0]]
    captured = {}

    def hook(module, args, kwargs):
        captured["x"], captured["pos"], captured["bias"] = args[0], kwargs["pos"], kwargs["bias"]

    handle = block.attn.register_forward_pre_hook(hook, with_kwargs=True)
    model(images)
    handle.remove()
    attn = block.attn
    x, pos, bias = captured["x"], captured["pos"], captured["bias"]
    bsz, n, c = x.shape
    qkv = attn.qkv(x).reshape(bsz, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.rope(attn.q_norm(qkv[0]), pos), attn.rope(attn.k_norm(qkv[1]), pos)
    logits = q @ k.transpose(-1, -2) / attn.head_dim**0.5 + bias.dense(n)
    weights = logits.softmax(-1)
    p = model.cfg.patch_start_idx
    tokens_per_frame = n // images.shape[1]
    cam_rows = torch.arange(images.shape[1]) * tokens_per_frame
    keys = torch.tensor(patch_idx) + p
    return weights[:, :, cam_rows][..., keys].mean()


@pytest.mark.parametrize("variant", ["fin10", "official"])
def test_bce_toward_dynamic_lowers_camera_attention_to_those_patches(variant):
    """The sign is right end to end: training `mask_logits` toward 1 makes camera rows look away."""
    from page4d.model import MaskHeadConfig

    mask = MaskHeadConfig(
        variant=variant, mask_after_block=2, masked_global_blocks=(3, 4, 5), scale=4.0, pointwise_channels=16
    )
    model = tiny(mask_head=mask)
    images = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(3))
    targets = [0, 1, 2]  # the top row of patches in each frame
    with torch.no_grad():
        before = camera_attention_to_patches(model, images, targets)
    opt = torch.optim.Adam(model.aggregator.spatial_mask_head.parameters(), lr=0.05)
    for _ in range(20):
        logits = model(images)["mask_logits"].reshape(1, 2, -1)[:, :, targets]
        loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = camera_attention_to_patches(model, images, targets)
        prob = torch.sigmoid(model(images)["mask_logits"].reshape(1, 2, -1)[:, :, targets]).mean()
    assert prob > 0.9
    # fin10's bias is bounded by |soft_mask_bias| = 0.5 logits; the official gain here is 4
    factor = {"fin10": 0.97, "official": 0.9}[variant]
    assert after < factor * before, f"camera attention to supervised patches went {before:.4g} -> {after:.4g}"


@pytest.mark.parametrize("detach", [True, False])
def test_detach_switch_decides_whether_mask_loss_reaches_the_backbone(detach):
    from page4d.model import MaskHeadConfig

    model = tiny(
        mask_head=MaskHeadConfig(mask_after_block=2, masked_global_blocks=(3, 4, 5), detach_input=detach)
    )
    model.train()
    model(torch.rand(1, 2, 3, 28, 28))["mask_logits"].sum().backward()
    head_grad = model.aggregator.spatial_mask_head.head0[0].weight.grad
    backbone_grad = model.aggregator.frame_blocks[0].attn.qkv.weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert (backbone_grad is None) == detach


def test_upsample_mask_logits_to_image_resolution():
    logits = torch.tensor([[[[-2.0, 2.0]]]])  # [1,1,1,2]
    up = upsample_mask_logits(logits, (14, 28))
    assert up.shape == (1, 1, 14, 28)
    assert torch.all(up[..., :14] < 0) and torch.all(up[..., 14:] > 0)
    assert torch.allclose(up[..., 0], torch.tensor(-2.0)) and torch.allclose(up[..., -1], torch.tensor(2.0))
    assert upsample_mask_logits(torch.zeros(1, 2, 3, 2, 3), (28, 42)).shape == (1, 2, 3, 28, 42)


@pytest.mark.parametrize("variant", ["fin10", "official"])
def test_given_mask_logits_drive_the_bias_exactly_as_the_heads_own(variant):
    """Feeding the head's own dynamic logits back as `given_mask_logits` reproduces every output bit for
    bit (the hook applies the head's own bias formula); a GT-style mask changes the cameras; without a
    mask head or with a wrong shape it is refused."""
    from page4d.model import logits_from_masks

    cfg = preset("tiny")
    if variant == "official":
        cfg = cfg.replace(mask_head=dataclasses.replace(cfg.mask_head, variant="official"))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = torch.rand(1, 2, 2, 3, 56, 70)
    with torch.no_grad():
        own = model(images)
        again = model(images, given_mask_logits=own["mask_logits"])
        masks = torch.zeros(1, 2, 2, 56, 70)
        masks[..., 14:42, 14:42] = 1.0
        oracle = model(images, given_mask_logits=logits_from_masks(masks, 14))
    for key in ("pose_enc", "depth", "world_points", "mask_logits"):
        assert torch.equal(own[key], again[key]), key
    assert not torch.equal(own["pose_enc"], oracle["pose_enc"])
    logits = logits_from_masks(masks, 14)
    assert logits.shape == (1, 2, 2, 4, 5) and logits[0, 0, 0, 1, 1] == 8.0 and logits[0, 0, 0, 0, 0] == -8.0
    with pytest.raises(ValueError, match="given_mask_logits must be"):
        model(images, given_mask_logits=torch.zeros(1, 4, 3, 5))
    with pytest.raises(ValueError, match="needs a model with a mask head"):
        build_model(cfg.replace(mask_head=None))(images, given_mask_logits=logits)


def test_the_conv_stem_is_a_tiny_only_patch_embedding_with_its_own_keys():
    """`patch_embed="conv_stem"` gives `[N, h*w, C]` tokens shaped as the 14x14 patchify's, each reading
    its own 14x14 pixel block and a few pixels of its neighbours' (the 3x3 convolutions' overlap), under
    its own keys, so neither embedding's checkpoint loads into the other."""
    conv = build_model(preset("tiny")).eval()
    stem = build_model(preset("tiny", patch_embed="conv_stem")).eval()
    x = torch.rand(2, 3, 112, 154)
    tokens = stem.aggregator.patch_embed(x)
    assert tokens.shape == conv.aggregator.patch_embed(x).shape == (2, 8 * 11, 64)
    moved = x.clone()
    moved[:, :, 56:70, 70:84] += 1.0  # one patch's pixels (row 4, column 5)
    changed = (stem.aggregator.patch_embed(moved) - tokens).abs().amax(dim=(0, 2)).reshape(8, 11) > 0
    assert changed[4, 5] and changed.sum() <= 9  # itself and at most its 8 neighbours (3x3 convs' overlap)
    keys = {k for k in stem.state_dict() if k.startswith("aggregator.patch_embed.")}
    assert keys == {
        f"aggregator.patch_embed.{m}.{p}" for m in ("stem.0", "stem.2", "proj") for p in ("weight", "bias")
    }
    with pytest.raises(CheckpointError, match="missing from checkpoint: aggregator.patch_embed.stem"):
        load_checkpoint(stem, conv.state_dict())
    with pytest.raises(ValueError, match="patch_embed must be conv, conv_stem or dinov2"):
        preset("tiny", patch_embed="stem")


def test_the_patch_embedding_is_read_from_a_checkpoint_s_keys_and_a_foreign_key_set_is_refused():
    """Each tiny embedding's weights say which they are (their exact `aggregator.patch_embed.*` keys); a
    key set of none of them (here the 1B preset's DINOv2, or no embedding at all) is an error naming the
    keys, never a guess."""
    for name in TINY_PATCH_EMBEDS:
        state = build_model(preset_with_patch_embed("tiny", name)).state_dict()
        assert patch_embed_of(state) == name
    with torch.device("meta"):
        dino = build_model(preset("vggt_1b")).state_dict()
    with pytest.raises(CheckpointError, match=r"W\.pt: its \d+ 'aggregator\.patch_embed\.\*' keys"):
        patch_embed_of(dino, where="W.pt")
    with pytest.raises(CheckpointError, match=r"0 'aggregator\.patch_embed\.\*' keys \(none\)"):
        patch_embed_of({"camera_head.x": torch.zeros(1)})


def test_tiny_patch_embeddings_conv_pos_tells_patches_apart_by_position_and_conv_does_not():
    """A uniform image has identical patches. The preset's patchify gives them identical tokens (their
    positions reach the network only through RoPE on queries and keys); `conv_pos`, DINOv2's embedding
    without blocks, adds its learned position table, resized to the image's grid, so they differ."""
    tiny = preset("tiny")
    grey = torch.full((1, 3, 112, 154), 0.5)
    conv = build_model(with_tiny_patch_embed(tiny, "conv")).aggregator.patch_embed(grey)
    assert torch.allclose(conv, conv[:, :1].expand_as(conv))
    pos_cfg = with_tiny_patch_embed(tiny, "conv_pos")
    assert pos_cfg.patch_embed == "dinov2" and pos_cfg.dino.depth == 0 and preset("tiny").dino is None
    embed = build_model(pos_cfg).aggregator.patch_embed
    tokens = embed(grey)
    assert tokens.shape == conv.shape == (1, 88, 64)
    assert torch.cdist(tokens[0], tokens[0]).add(torch.eye(88) * 1e3).min() > 1e-3  # all 88 tokens differ
    assert embed(torch.full((1, 3, 154, 154), 0.5)).shape == (1, 121, 64)  # the stored 11x11 grid as is
    with pytest.raises(ValueError, match="tiny patch embedding must be one of"):
        with_tiny_patch_embed(tiny, "dinov2")
