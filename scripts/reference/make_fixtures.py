#!/usr/bin/env python3
"""Writes the real-model reference fixtures under tests/data/all-MiniLM-L6-v2/.

Runs Hugging Face `tokenizers` and `sentence-transformers` (CPU torch, fp32; the pinned
versions of requirements/reference.txt) on the real sentence-transformers/all-MiniLM-L6-v2
folder that scripts/setup.sh lays out at models/all-MiniLM-L6-v2, and writes:

  reference.jsonl          one line per text: {"text", "ids"}; ids are the token ids
                           sentence-transformers feeds the model (truncated to 256)
  reference_embeddings.f32 SentenceTransformer.encode(texts) in fp32 (its Normalize
                           module included), rows in the order of reference.jsonl,
                           little-endian float32, 384 per row
  pairs.jsonl              {"text_a", "text_b", "score"}: cosine of the two fp32
                           embeddings (sentence_transformers.util.cos_sim)
  tokenizer_ids.jsonl      {"text", "ids"}: tokenizers.Tokenizer.from_file(tokenizer.json)
                           with truncation and padding off, on the 3,000 hard tokenizer
                           cases and the English sentences
  meta.json                versions, counts, sha256 of each file above, ST's own triplet
                           margins for triplets.tsv

The texts: the English sentences of bench/data/english_sentences.txt, the same in upper
and title case, paragraphs of them past 256 tokens, half of the 3,000 hard tokenizer
cases (tests/data/tokenizer_cases.jsonl: unicode, accents, CJK, emoji, control and
zero-width characters, empty strings, 200-400-word texts), punctuation-only texts and the
texts of triplets.tsv. Deterministic: the same inputs and versions give the same files.

Usage: scripts/reference/make_fixtures.sh (makes .venv-ref from requirements/reference.txt
and runs this with it).
"""
import hashlib
import json
import os
import random
import struct
import sys

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import SentenceTransformer, util

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "tests", "data", "all-MiniLM-L6-v2")


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def triplets():
    rows = []
    for line in read_lines(os.path.join(OUT, "triplets.tsv")):
        if line.startswith("#"):
            continue
        a, p, u = line.split("\t")
        rows.append((a, p, u))
    return rows


def texts_and_pairs():
    rng = random.Random(20261201)
    english = read_lines(os.path.join(ROOT, "bench", "data", "english_sentences.txt"))
    with open(os.path.join(ROOT, "tests", "data", "tokenizer_cases.jsonl"), encoding="utf-8") as f:
        hard = [json.loads(line)["text"] for line in f]
    texts = list(english)
    texts += [s.upper() for s in english[:150]]
    texts += [s.title() for s in english[150:]]
    for _ in range(60):  # 15-40 sentences: 300-1,000 tokens, truncated to 256
        texts.append(" ".join(rng.sample(english, rng.randint(15, 40))))
    texts += hard[::2]
    texts += ["", " ", "!!!", "...", "?!?!", "---", "(((", ")))", "@#$%^&*", ".,;:",
              "\"''\"", "~~~", "+-*/=", "<<>>", "[]{}", "!?", "…", "—", "¡¿", "•••",
              "#", "%", "&&", "||", "__"]
    trip = triplets()
    for t in trip:
        texts += list(t)
    # Pairs: paraphrase and unrelated pairs of the triplets, then random pairs of the texts
    # above (English with English, and with any text).
    pairs = []
    for a, p, u in trip:
        pairs += [(a, p), (a, u), (p, u)]
    for _ in range(250):
        pairs.append(tuple(rng.sample(english, 2)))
    for _ in range(250):
        pairs.append((rng.choice(texts), rng.choice(texts)))
    return texts, pairs


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    if not os.path.isfile(os.path.join(MODEL, "model.safetensors")):
        sys.exit(f"{MODEL} is missing: run scripts/setup.sh first")
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    texts, pairs = texts_and_pairs()

    model = SentenceTransformer(MODEL, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    emb = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    emb = emb.astype("<f4")
    assert emb.shape == (len(texts), 384), emb.shape

    # The ids sentence-transformers feeds the model, batch by batch as encode() does.
    ids = []
    for start in range(0, len(texts), 64):
        feats = model.tokenize(texts[start:start + 64])
        for row, mask in zip(feats["input_ids"].tolist(), feats["attention_mask"].tolist()):
            ids.append(row[:sum(mask)])

    with open(os.path.join(OUT, "reference.jsonl"), "w", encoding="utf-8") as f:
        for text, row in zip(texts, ids):
            f.write(json.dumps({"text": text, "ids": row}, ensure_ascii=False) + "\n")
    emb.tofile(os.path.join(OUT, "reference_embeddings.f32"))

    # Pair scores from fp32 embeddings of each side.
    a = model.encode([p[0] for p in pairs], batch_size=32, convert_to_tensor=True)
    b = model.encode([p[1] for p in pairs], batch_size=32, convert_to_tensor=True)
    scores = util.pairwise_cos_sim(a, b).tolist()
    with open(os.path.join(OUT, "pairs.jsonl"), "w", encoding="utf-8") as f:
        for (ta, tb), s in zip(pairs, scores):
            f.write(json.dumps({"text_a": ta, "text_b": tb, "score": s}, ensure_ascii=False) + "\n")

    # The Hugging Face fast tokenizer on the real tokenizer.json, untruncated.
    tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    with open(os.path.join(ROOT, "tests", "data", "tokenizer_cases.jsonl"), encoding="utf-8") as f:
        tok_texts = [json.loads(line)["text"] for line in f]
    tok_texts += read_lines(os.path.join(ROOT, "bench", "data", "english_sentences.txt"))
    with open(os.path.join(OUT, "tokenizer_ids.jsonl"), "w", encoding="utf-8") as f:
        for text, enc in zip(tok_texts, tok.encode_batch(tok_texts)):
            f.write(json.dumps({"text": text, "ids": enc.ids}, ensure_ascii=False) + "\n")

    trip = triplets()
    t = model.encode([x for row in trip for x in row], convert_to_tensor=True).reshape(len(trip), 3, -1)
    margins = (util.pairwise_cos_sim(t[:, 0], t[:, 1]) - util.pairwise_cos_sim(t[:, 0], t[:, 2])).tolist()

    files = ["reference.jsonl", "reference_embeddings.f32", "pairs.jsonl", "tokenizer_ids.jsonl",
             "triplets.tsv"]
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": sha256(os.path.join(MODEL, "model.safetensors")),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "texts": len(texts), "dimension": 384, "pairs": len(pairs),
        "tokenizer_texts": len(tok_texts), "triplets": len(trip),
        "st_triplet_margin_mean": sum(margins) / len(margins),
        "st_triplet_margin_min": min(margins),
        "st_triplets_ranked_right": sum(m > 0 for m in margins),
        "sha256": {name: sha256(os.path.join(OUT, name)) for name in files},
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, indent=1))


if __name__ == "__main__":
    main()
