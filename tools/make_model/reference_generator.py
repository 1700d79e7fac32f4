#!/usr/bin/python3
"""Independent re-implementation of embedserve-make-model's model.safetensors in Python.

Cross-checks that the C++ generator depends only on exactly specified arithmetic: prints
the sha256 of the file for a preset and seed, to compare with
`sha256sum DIR/model.safetensors` after `embedserve-make-model --out DIR --preset P --seed S`.
Usage: /usr/bin/python3 tools/make_model/reference_generator.py --preset tiny --seed 1
(pure Python: tiny takes ~10 s, minilm-l6 several minutes).
"""
import argparse
import hashlib
import json
import math
import struct

M64 = (1 << 64) - 1
PRESETS = {"minilm-l6": (384, 6, 12, 1536), "minilm-l12": (384, 12, 12, 1536),
           "bert-base": (768, 12, 12, 3072), "tiny": (32, 2, 4, 64)}


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed = (seed + 0x9E3779B97F4A7C15) & M64
            z = seed
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))
        self.spare = None

    def next(self):
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def uniform(self):
        return float(self.next() >> 11) * 2.0 ** -52 - 1.0

    def normal(self):
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        while True:
            u = self.uniform()
            v = self.uniform()
            s = u * u + v * v
            if 0.0 < s < 1.0:
                break
        f = math.sqrt(-2.0 * det_log(s) / s)
        self.spare = v * f
        return u * f


def det_log(x):
    m, e = math.frexp(x)
    if m < 0.70710678118654752:
        m *= 2.0
        e -= 1
    y = (m - 1.0) / (m + 1.0)
    y2 = y * y
    term, total = y, 0.0
    for k in range(16):
        total += term / float(2 * k + 1)
        term *= y2
    return 2.0 * total + float(e) * 0.69314718055994531


def build(preset, seed):
    h, layers, _, inter = PRESETS[preset]
    rng = Rng(seed)
    tensors = []

    def normal(name, shape):
        n = 1
        for d in shape:
            n *= d
        tensors.append((name, shape, struct.pack("<%df" % n, *(rng.normal() * 0.02 for _ in range(n)))))

    def const(name, size, value):
        tensors.append((name, [size], struct.pack("<%df" % size, *([value] * size))))

    normal("embeddings.word_embeddings.weight", [30522, h])
    name, shape, data = tensors[-1]
    tensors[-1] = (name, shape, b"\0" * (4 * h) + data[4 * h:])
    normal("embeddings.position_embeddings.weight", [512, h])
    normal("embeddings.token_type_embeddings.weight", [2, h])
    const("embeddings.LayerNorm.weight", h, 1.0)
    const("embeddings.LayerNorm.bias", h, 0.0)
    for l in range(layers):
        p = "encoder.layer.%d." % l
        for qkv in ("query", "key", "value"):
            normal(p + "attention.self." + qkv + ".weight", [h, h])
            const(p + "attention.self." + qkv + ".bias", h, 0.0)
        normal(p + "attention.output.dense.weight", [h, h])
        const(p + "attention.output.dense.bias", h, 0.0)
        const(p + "attention.output.LayerNorm.weight", h, 1.0)
        const(p + "attention.output.LayerNorm.bias", h, 0.0)
        normal(p + "intermediate.dense.weight", [inter, h])
        const(p + "intermediate.dense.bias", inter, 0.0)
        normal(p + "output.dense.weight", [h, inter])
        const(p + "output.dense.bias", h, 0.0)
        const(p + "output.LayerNorm.weight", h, 1.0)
        const(p + "output.LayerNorm.bias", h, 0.0)
    normal("pooler.dense.weight", [h, h])
    const("pooler.dense.bias", h, 0.0)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, data in tensors:
        header[name] = {"data_offsets": [offset, offset + len(data)], "dtype": "F32", "shape": shape}
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(d for _, _, d in tensors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="minilm-l6", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    print(hashlib.sha256(build(args.preset, args.seed)).hexdigest())
