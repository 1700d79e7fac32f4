#!/usr/bin/env python3
"""Issue 3 acceptance on the GPU machine: a full-size synthetic minilm-l6 folder written
by embedserve-make-model, loaded by sentence-transformers (python3's torch) and by
embedserve-embed, must give cosine >= 0.99999 on 1,000 texts in fp32.

Texts: 500 generated English-like sentences of 1..300 words (some past the 256-token
limit, so truncation is compared too) and the first 500 texts of
tests/data/tokenizer_cases.jsonl (accents, CJK, emoji, control characters, ...).
Prints the minimum cosine per group and overall; exits 1 below the threshold.

Usage (GPU machine, after scripts/device/build_and_test.sh):
  python3 scripts/device/st_vs_embed.py --build build-gpu [--device cuda] [--n 1000]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np


def generated_texts(vocab_path, n, seed=1234):
    words = []
    with open(vocab_path, encoding="utf-8") as f:
        for line in f:
            w = line.rstrip("\n")
            if w.isalpha() and w.isascii() and len(w) > 1:
                words.append(w)
    rng = random.Random(seed)
    punct = [",", ".", "!", "?", ";", ":", "'s", "-"]
    out = []
    for i in range(n):
        n_words = int(round(np.exp(rng.uniform(0.0, np.log(300)))))
        toks = []
        for _ in range(n_words):
            w = rng.choice(words)
            if rng.random() < 0.1:
                w = w.capitalize()
            toks.append(w)
            if rng.random() < 0.08:
                toks.append(rng.choice(punct))
        out.append(" ".join(toks))
    return out


def fixture_texts(path, n):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def find_exe(build, name):
    for root, _, files in os.walk(build):
        if name in files:
            p = os.path.join(root, name)
            if os.access(p, os.X_OK):
                return p
    sys.exit(f"st_vs_embed: {name} not found under {build}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-gpu")
    ap.add_argument("--model-dir", default="/tmp/minilm-l6-synthetic")
    ap.add_argument("--device", default="cuda", help="embedserve-embed's --device")
    ap.add_argument("--st-device", default="cuda")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threshold", type=float, default=0.99999)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--make-model-args", default="--preset minilm-l6 --seed 42 --out {dir}",
                    help="arguments of embedserve-make-model; {dir} is the folder")
    args = ap.parse_args()

    make_model = find_exe(args.build, "embedserve-make-model")
    embed = find_exe(args.build, "embedserve-embed")
    if not os.path.exists(os.path.join(args.model_dir, "model.safetensors")):
        cmd = [make_model] + args.make_model_args.format(dir=args.model_dir).split()
        print("$", " ".join(cmd), flush=True)
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"st_vs_embed: embedserve-make-model exited {made.returncode}: "
                     f"{made.stderr[-2000:]} (on the GPU machine: source scripts/device/env.sh)")

    half = args.n // 2
    groups = {"generated": generated_texts(os.path.join(args.model_dir, "vocab.txt"), args.n - half),
              "fixture": fixture_texts("tests/data/tokenizer_cases.jsonl", half)}
    texts = groups["generated"] + groups["fixture"]

    import torch
    from sentence_transformers import SentenceTransformer
    torch.backends.cuda.matmul.allow_tf32 = False
    st = SentenceTransformer(args.model_dir, device=args.st_device)
    print(f"sentence-transformers: max_seq_length {st.max_seq_length}, modules "
          f"{[type(m).__name__ for m in st]}", flush=True)
    t0 = time.time()
    ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
    t_st = time.time() - t0

    cmd = [embed, "--model", args.model_dir, "--device", args.device, "--precision", "fp32",
           "--batch-size", str(args.batch_size)]
    print("$", " ".join(cmd), "< 1 text per line", flush=True)
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    t0 = time.time()
    proc = subprocess.run(cmd, input=stdin.encode(), capture_output=True)
    t_es = time.time() - t0
    if proc.returncode != 0:
        print(proc.stderr.decode()[-3000:])
        sys.exit(f"st_vs_embed: embedserve-embed exited {proc.returncode}")
    lines = proc.stdout.decode().splitlines()
    if len(lines) != len(texts):
        sys.exit(f"st_vs_embed: {len(lines)} output lines for {len(texts)} texts")
    got = []
    for i, line in enumerate(lines):
        obj = json.loads(line)
        if "embedding" not in obj:
            sys.exit(f"st_vs_embed: text {i} got {line[:300]}")
        got.append(obj["embedding"])
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        sys.exit(f"st_vs_embed: shapes differ: embedserve {got.shape}, ST {ref.shape}")
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    start = 0
    for name, g in groups.items():
        c = cos[start:start + len(g)]
        print(f"{name:9s}: {len(g)} texts, min cosine {c.min():.8f}, mean {c.mean():.8f}")
        start += len(g)
    worst = int(np.argmin(cos))
    maxabs = np.abs(got / np.linalg.norm(got, axis=1, keepdims=True)
                    - ref / np.linalg.norm(ref, axis=1, keepdims=True)).max()
    print(f"ALL: {len(texts)} texts, dim {got.shape[1]}, min cosine {cos.min():.8f} "
          f"(text {worst}: {texts[worst][:60]!r}), max |diff| of unit vectors {maxabs:.2e}; "
          f"ST {t_st:.1f} s on {args.st_device}, embedserve-embed {t_es:.1f} s on {args.device}")
    ok = cos.min() >= args.threshold
    print(f"st_vs_embed: {'PASS' if ok else 'FAIL'} (threshold {args.threshold})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
