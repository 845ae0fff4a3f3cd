#!/usr/bin/python3
"""Independent reference for extract/rand_augment.cpp: timm's RandAugment ops
written here from their definitions (the official EVL rand_augment.py, a copy of
timm's auto_augment.py) on Pillow (python3-pil 9.4), the library the official
loader runs them with.

  rand_augment_reference.py ops OUTDIR OPS IN.ppm...
      applies each op of OPS ("Name:magnitude:sign,...", one op at a time, not
      chained) to each input frame; writes OUTDIR/f<i>_o<j>.ppm.
  rand_augment_reference.py chain OUT.npy OPS BOX SIZE MEAN STD IN.ppm...
      the official training chain on T frames: uint8 -> float/255 -> ToPILImage
      (x255, truncate) -> the ops of OPS in order -> ToTensor (/255) ->
      normalise -> crop BOX (top,left,h,w) -> bilinear resize to SIZE x SIZE
      (F.interpolate, align_corners=False, no antialias); writes the
      (T, 3, SIZE, SIZE) result as raw little-endian float32.
  rand_augment_reference.py frames OUTDIR VIDEO N
      decodes the first N frames of VIDEO with PyAV (rgb24, display size) and
      writes every one as OUTDIR/<k>.ppm: real frames for the tests.
"""
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
RESAMPLE = Image.BICUBIC


def signed(v, negate):
    return -v if negate else v


def apply(img, name, m, negate):
    """timm's op `name` at magnitude m (level_to_arg, then the PIL call)."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return img.rotate(signed(m / MAX_LEVEL * 30.0, negate), resample=RESAMPLE, fillcolor=FILL)
    if name in ("Posterize", "PosterizeIncreasing"):
        bits = int(m / MAX_LEVEL * 4)
        if name == "PosterizeIncreasing":
            bits = 4 - bits
        return img if bits >= 8 else ImageOps.posterize(img, bits)
    if name in ("Solarize", "SolarizeIncreasing"):
        thresh = int(m / MAX_LEVEL * 256)
        if name == "SolarizeIncreasing":
            thresh = 256 - thresh
        return ImageOps.solarize(img, thresh)
    if name == "SolarizeAdd":
        add = int(m / MAX_LEVEL * 110)
        lut = [min(255, i + add) if i < 128 else i for i in range(256)]
        return img.point(lut * 3)
    enhancers = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
                 "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
    for base, enhancer in enhancers.items():
        if name == base:
            return enhancer(img).enhance(m / MAX_LEVEL * 1.8 + 0.1)
        if name == base + "Increasing":
            return enhancer(img).enhance(1.0 + signed(m / MAX_LEVEL * 0.9, negate))
    affine = None
    if name == "ShearX":
        affine = (1, signed(m / MAX_LEVEL * 0.3, negate), 0, 0, 1, 0)
    elif name == "ShearY":
        affine = (1, 0, 0, signed(m / MAX_LEVEL * 0.3, negate), 1, 0)
    elif name == "TranslateXRel":
        affine = (1, 0, signed(m / MAX_LEVEL * 0.45, negate) * img.size[0], 0, 1, 0)
    elif name == "TranslateYRel":
        affine = (1, 0, 0, 0, 1, signed(m / MAX_LEVEL * 0.45, negate) * img.size[1])
    if affine is None:
        raise SystemExit(f"unknown op {name}")
    return img.transform(img.size, Image.AFFINE, affine, resample=RESAMPLE, fillcolor=FILL)


def parse_ops(text):
    ops = []
    for item in filter(None, text.split(",")):
        f = item.split(":")
        ops.append((f[0], float(f[1]), len(f) > 2 and f[2] == "-"))
    return ops


def main():
    mode = sys.argv[1]
    if mode == "ops":
        out, ops, frames = sys.argv[2], parse_ops(sys.argv[3]), sys.argv[4:]
        for i, path in enumerate(frames):
            img = Image.open(path).convert("RGB")
            for j, (name, m, negate) in enumerate(ops):
                apply(img, name, m, negate).save(f"{out}/f{i}_o{j}.ppm")
        return
    if mode == "chain":
        import torch
        import torch.nn.functional as F
        out, ops = sys.argv[2], parse_ops(sys.argv[3])
        top, left, h, w = (int(v) for v in sys.argv[4].split(","))
        size = int(sys.argv[5])
        mean = torch.tensor([float(v) for v in sys.argv[6].split(",")]).view(3, 1, 1)
        std = torch.tensor([float(v) for v in sys.argv[7].split(",")]).view(3, 1, 1)
        views = []
        for path in sys.argv[8:]:
            x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255
            # torchvision ToPILImage on a float tensor: mul(255).byte()
            img = Image.fromarray(x.mul(255).byte().numpy(), "RGB")
            for name, m, negate in ops:
                img = apply(img, name, m, negate)
            t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # ToTensor
            t = (t - mean) / std
            views.append(t[:, top:top + h, left:left + w])
        x = F.interpolate(torch.stack(views), size=(size, size), mode="bilinear",
                          align_corners=False)
        x.numpy().astype("<f4").tofile(out)
        return
    if mode == "frames":
        import av
        out, video, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        with av.open(video) as container:
            for k, frame in enumerate(container.decode(video=0)):
                if k >= n:
                    break
                Image.fromarray(frame.to_ndarray(format="rgb24"), "RGB").save(f"{out}/{k}.ppm")
        return
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
