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


def build(width: int, layers: int, patch: int, image_size: int, embed_dim: int,
          heads: int = 0, seed: int = 0, tied_qk: bool = False,
          pos_scale: float = 1.0) -> CLIPVisualOnly:
    heads = heads or max(1, width // 64)
    torch.manual_seed(seed)
    visual = VisionTransformer(image_size, patch, width, layers, heads, embed_dim)
    randomise(visual, seed)
    if tied_qk:
        tie_query_key(visual, pos_scale)
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
    model = build(width, layers, patch, size, embed, a.heads, a.seed, a.tied_qk, a.pos_scale)
    save_torchscript(model, a.output)
    print(f"wrote {a.output}: width {width}, layers {layers}, patch {patch}, "
          f"image {size}, embed {embed}, heads {a.heads or max(1, width // 64)}")


if __name__ == "__main__":
    main()
