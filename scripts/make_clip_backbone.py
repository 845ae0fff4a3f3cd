#!/usr/bin/python3
"""Writes a CLIP-shaped OpenAI-style TorchScript archive with random weights.

The archive mirrors OpenAI's `ViT-B-16.pt`: a scripted module whose `visual`
submodule holds conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks.N.{ln_1, attn (nn.MultiheadAttention), ln_2, mlp.c_fc,
mlp.c_proj}, ln_post and proj, stored in fp16. It is for demos, tests and
benchmarks of evl's backbone loader: the weights are random, not CLIP's.

    /usr/bin/python3 scripts/make_clip_backbone.py --preset b16 -o /tmp/vit-b16.pt
    /usr/bin/python3 scripts/make_clip_backbone.py --width 64 --layers 3 --patch 8 \
        --image-size 32 -o tiny.pt
"""
import argparse
import collections
import copy

import torch
from torch import nn

PRESETS = {
    # name: (width, layers, patch, image_size, embed_dim)
    "tiny": (64, 3, 8, 32, 32),
    "b16": (768, 12, 16, 224, 512),
    "l14": (1024, 24, 14, 224, 768),
    "l14-336": (1024, 24, 14, 336, 768),
}


class LayerNorm(nn.LayerNorm):
    """CLIP's fp16-safe LayerNorm: computes in fp32, returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.dtype
        y = nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                                     self.bias.float(), self.eps)
        return y.type(t)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (L, N, C)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int,
                 embed_dim: int):
        super().__init__()
        grid = image_size // patch
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 3, S, S) -> (N, E)
        x = self.conv1(x.type(self.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1],
                                                             dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIPVisualOnly(nn.Module):
    """Stands in for OpenAI's `CLIP` module; only the `visual` tower is present."""

    def __init__(self, visual: VisionTransformer):
        super().__init__()
        self.visual = visual

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def randomise(model: VisionTransformer, seed: int) -> None:
    """CLIP-like random init so that activations stay in a sensible range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or "ln_p" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                fan_in = p[0].numel() if name != "proj" else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) * fan_in ** -0.5)
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def tie_query_key(model: VisionTransformer, pos_scale: float) -> None:
    """Key projection = query projection in every block, and a weaker position embedding.

    With random independent W_q and W_k, q.k is a random bilinear form of two
    tokens, so attention (and EVL's temporal cross attention, which reads the
    backbone's q and k) ignores what the tokens show. Tying them makes q_i.k_j
    = (W_q x_i).(W_q x_j), a similarity: tokens attend to tokens that look
    alike, as a trained ViT's attention largely does, and cross-frame attention
    follows moving content. Scaling the position embedding down keeps position
    from dominating that similarity.
    """
    with torch.no_grad():
        for block in model.transformer.resblocks:
            w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
            c = w.shape[1]
            w[c:2 * c].copy_(w[:c])
            b[c:2 * c].copy_(b[:c])
        model.positional_embedding.mul_(pos_scale)


# Residual-stream outliers (add_outliers): per-channel magnitude factors over the
# typical channel, and the norm factor of the high-norm tokens over the typical token.
OUTLIER_CHANNEL_FACTORS = (10.0, 30.0, 100.0)
OUTLIER_TOKEN_NORM = 10.0


def residual_stream(visual: VisionTransformer, images: torch.Tensor) -> list:
    """Outputs of every block, each (N, L, C) float32, for `images` (N, 3, S, S)."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.permute(1, 0, 2).detach()))
             for b in visual.transformer.resblocks]
    with torch.no_grad():
        visual(images)
    for h in hooks:
        h.remove()
    return outs


def outlier_stats(x: torch.Tensor, channels: list, tokens: list) -> tuple:
    """Medians, so that each kind of outlier does not inflate the other's baseline.
    Returns (per outlier channel: its median |x| over the ordinary tokens / the
    median channel's, the outlier tokens' median norm / the other tokens'), x (N, L, C)."""
    others = [t for t in range(x.shape[1]) if t not in tokens]
    per_channel = x[:, others].abs().flatten(0, 1).median(dim=0).values
    typical_channel = per_channel.median()
    norms = x.norm(dim=2)  # (N, L)
    token_ratio = norms[:, tokens].median() / norms[:, others].median()
    return [float(per_channel[c] / typical_channel) for c in channels], float(token_ratio)


def add_outliers(visual: VisionTransformer, seed: int, block_index: int = 0) -> dict:
    """Gives the residual stream (the features evl caches) CLIP's two kinds of outliers.

    What it imitates: trained ViTs, CLIP included, carry a few residual-stream
    channels whose magnitude is tens to hundreds of times the median channel's on
    every token ("massive activations", Sun et al. 2024; the inter-channel
    variation of LayerNorm inputs in ViTs, FQ-ViT, Lin et al. 2022), and a few
    tokens, usually low-information background patches, whose norm is about 10x
    the others' ("high-norm tokens", Darcet et al., "Vision Transformers Need
    Registers", 2024). Random weights have neither.

    How: block B's (--outlier-block, default 0) MLP output bias gets, on three channels, a constant that makes
    them OUTLIER_CHANNEL_FACTORS times the median channel (kept by the residual
    connections in every later block). For the tokens, the position embedding of
    a few patch positions gets a strong component along a random direction d, and
    one hidden unit of block B's MLP is rewired into a detector of d that fires
    only on those tokens and writes a large vector into the residual stream, as
    early-layer MLPs do in trained models. Positions are fixed (the same patches
    of every frame), where CLIP's move with the content: for a storage test only
    the statistics matter. Factors are measured on random images after the
    construction (returned; the generator prints them).
    """
    g = torch.Generator().manual_seed(seed + 7919)
    width = visual.ln_pre.weight.shape[0]
    tokens_per_frame = visual.positional_embedding.shape[0]
    patches = tokens_per_frame - 1
    n_tokens = max(2, patches // 50)
    tokens = [1 + int(t) for t in torch.randperm(patches, generator=g)[:n_tokens]]
    channels = [int(c) for c in torch.randperm(width, generator=g)[:len(OUTLIER_CHANNEL_FACTORS)]]
    size = visual.conv1.stride[0] * int(round(patches ** 0.5))
    images = torch.randn(4, 3, size, size, generator=g)
    block = visual.transformer.resblocks[block_index]
    with torch.no_grad():
        # High-norm tokens: the position embedding marks them with d (unit RMS,
        # zero mean, so ln_pre keeps it), one MLP unit detects d and writes v.
        d = torch.randn(width, generator=g)
        d = (d - d.mean()) / d.std()
        # The mark is 3x the typical token (patch embedding + position) at ln_pre's
        # input, so it dominates the marked tokens whatever the image shows.
        seen = {}
        hook = visual.ln_pre.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach()))
        visual(images)
        hook.remove()
        typical_input = seen["x"].norm(dim=2).median()
        for t in tokens:
            visual.positional_embedding[t] += 3.0 * typical_input / width ** 0.5 * d
        # Calibrate the detector on ln_2's input as the block sees it.
        seen = {}
        hook = block.ln_2.register_forward_hook(lambda m, i, o: seen.update(h=o.detach()))
        visual(images)
        hook.remove()
        h = seen["h"].permute(1, 0, 2)  # (N, L, C)
        score = h @ d / width  # about 1 on a marked token, about 0 elsewhere
        marked = score[:, tokens].min()
        unmarked = score[:, [t for t in range(tokens_per_frame) if t not in tokens]].max()
        if not marked > unmarked:
            raise SystemExit(f"outlier tokens not separable ({float(marked)} <= {float(unmarked)})")
        threshold = float(marked + unmarked) / 2
        gain = 20.0 / float(marked - unmarked)
        unit = 0
        block.mlp.c_fc.weight[unit] = gain * d / width
        block.mlp.c_fc.bias[unit] = -gain * threshold
        # Channel outliers, calibrated on the last block's output (detector off).
        block.mlp.c_fc.weight[unit] = 0
        block.mlp.c_fc.bias[unit] = -1e4
        others = [t for t in range(tokens_per_frame) if t not in tokens]
        x = residual_stream(visual, images)[-1][:, others]
        typical_channel = x.abs().flatten(0, 1).median(dim=0).values.median()
        for c, f in zip(channels, OUTLIER_CHANNEL_FACTORS):
            block.mlp.c_proj.bias[c] = f * typical_channel * torch.sign(torch.randn(1, generator=g))
        block.mlp.c_fc.weight[unit] = gain * d / width
        block.mlp.c_fc.bias[unit] = -gain * threshold
        # The written vector v: scaled until the marked tokens' norm is
        # OUTLIER_TOKEN_NORM times the others' (channel outliers included) at the
        # last block (the map from |v| to that ratio is close to linear).
        direction = torch.randn(width, generator=g)
        direction /= direction.norm()
        # Then both kinds are rescaled together a few times (they interact
        # through the later blocks' LayerNorms).
        scale = 1.0
        for _ in range(6):
            block.mlp.c_proj.weight[:, unit] = scale * direction
            ratios, ratio = outlier_stats(residual_stream(visual, images)[-1], channels, tokens)
            scale *= OUTLIER_TOKEN_NORM / ratio
            for c, f, r in zip(channels, OUTLIER_CHANNEL_FACTORS, ratios):
                block.mlp.c_proj.bias[c] *= f / r
    stats = [outlier_stats(x, channels, tokens) for x in residual_stream(visual, images)]
    return {"channels": channels, "tokens": tokens, "per_block": stats}


def build(width: int, layers: int, patch: int, image_size: int, embed_dim: int,
          heads: int = 0, seed: int = 0, tied_qk: bool = False,
          pos_scale: float = 1.0, outliers: bool = False,
          outlier_block: int = 0) -> CLIPVisualOnly:
    heads = heads or max(1, width // 64)
    torch.manual_seed(seed)
    visual = VisionTransformer(image_size, patch, width, layers, heads, embed_dim)
    randomise(visual, seed)
    if tied_qk:
        tie_query_key(visual, pos_scale)
    if outliers:
        visual.outlier_report = add_outliers(visual, seed, outlier_block)
    return CLIPVisualOnly(visual).eval()


def save_torchscript(model: CLIPVisualOnly, path: str) -> None:
    """fp16 storage like OpenAI's archives (LayerNorms included)."""
    half = torch.jit.script(copy.deepcopy(model))
    half = half.half()
    torch.jit.save(half, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--width", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--patch", type=int)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--embed-dim", type=int)
    ap.add_argument("--heads", type=int, default=0, help="default width/64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tied-qk", action="store_true",
                    help="key projection = query projection (similarity attention; see tie_query_key)")
    ap.add_argument("--pos-scale", type=float, default=1.0,
                    help="with --tied-qk: factor on the position embedding")
    ap.add_argument("--outliers", action="store_true",
                    help="CLIP-like residual-stream outliers: a few channels 10-100x the median "
                         "channel, a few tokens with ~10x the norm (see add_outliers)")
    ap.add_argument("--outlier-block", type=int, default=0,
                    help="with --outliers: the block whose MLP creates them (earlier blocks "
                         "compute as without)")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    width, layers, patch, size, embed = PRESETS[a.preset] if a.preset else (0, 0, 0, 0, 0)
    width = a.width or width
    layers = a.layers or layers
    patch = a.patch or patch
    size = a.image_size or size
    embed = a.embed_dim or embed or width // 2
    if not (width and layers and patch and size):
        ap.error("give --preset or all of --width --layers --patch --image-size")
    if size % patch:
        ap.error(f"--image-size {size} is not a multiple of --patch {patch}")
    if a.pos_scale != 1.0 and not a.tied_qk:
        ap.error("--pos-scale only goes with --tied-qk")
    model = build(width, layers, patch, size, embed, a.heads, a.seed, a.tied_qk, a.pos_scale,
                  a.outliers, a.outlier_block)
    report = getattr(model.visual, "outlier_report", None)
    if report:
        del model.visual.outlier_report
    save_torchscript(model, a.output)
    if report:
        print(f"outlier channels {report['channels']}, high-norm tokens {report['tokens']}")
        for b, (channel_ratios, token_ratio) in enumerate(report["per_block"]):
            print(f"  block {b}: channels {', '.join(f'{r:.0f}x' for r in channel_ratios)} the "
                  f"median channel, tokens {token_ratio:.1f}x the median token norm")
    print(f"wrote {a.output}: width {width}, layers {layers}, patch {patch}, "
          f"image {size}, embed {embed}, heads {a.heads or max(1, width // 64)}")


if __name__ == "__main__":
    main()
