#!/usr/bin/env python3
"""Times Hugging Face `tokenizers` (one thread) on a sentence file and, optionally, our
tokenizer_bench on the same file, and prints both and the ratio.

Run on the GPU machine (it has `tokenizers`; the dev machine does not), from the repo root:
  cmake -S . -B build-tokbench -G Ninja -DEMBEDSERVE_WITH_TORCH=OFF -DEMBEDSERVE_WITH_GRPC=OFF \
      -DEMBEDSERVE_BUILD_TESTS=OFF && cmake --build build-tokbench --target tokenizer_bench
  python3 scripts/device/tokenizer_vs_hf.py --tokenizer tests/data/tokenizer/tokenizer.json \
      --sentences bench/data/english_sentences.txt --ours build-tokbench/bench/tokenizer/tokenizer_bench

--tokenizer: a tokenizer.json (Tokenizer.from_file) or a vocab.txt (BertWordPieceTokenizer with
all-MiniLM-L6-v2's settings). HF runs single-threaded (TOKENIZERS_PARALLELISM=false,
RAYON_NUM_THREADS=1) and encodes each text with tok.encode(text), like BM_EncodeEach does with
Encode(text, 0); no truncation or padding on either side. tokens = ids incl. [CLS]/[SEP].
Also printed, for reference: HF encode_batch on all texts (one thread, no per-call Python
overhead). Both sides print an FNV-1a fingerprint of all ids: equal means identical ids.

Differential mode (exactness beyond the fixtures): --diff-tool PATH/embedserve-tokenize
encodes, for every Unicode scalar value c (U+0000..U+10FFFF, surrogates excluded), the
text "a" c "b " c c "A" with HF and with our CLI, and lists the code points whose ids
differ (with their Python unicodedata category), writing them to --diff-out.
--gen-inc PATH regenerates src/tokenizer/hf_unicode_overrides.inc from HF's behaviour on
every code point (normalizer and pre-tokenizer probes), independent of our build.
  python3 scripts/device/tokenizer_vs_hf.py --tokenizer tests/data/tokenizer/tokenizer.json \
      --diff-tool build-tokbench/tools/tokenize/embedserve-tokenize --diff-out diff.jsonl
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"


def fingerprint(all_ids):
    h = 1469598103934665603
    for ids in all_ids:
        for i in ids:
            h = ((h ^ (i & 0xFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def load_hf(path):
    import tokenizers
    if path.endswith(".json"):
        tok = tokenizers.Tokenizer.from_file(path)
        tok.no_truncation()
        tok.no_padding()
    else:
        tok = tokenizers.BertWordPieceTokenizer(
            path, clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    return tok, tokenizers.__version__


def time_loop(fn, min_seconds):
    fn()  # warm-up
    passes, start = 0, time.perf_counter()
    while True:
        fn()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return passes, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json or vocab.txt")
    ap.add_argument("--sentences", help="one text per line")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--ours", help="path to our tokenizer_bench; run it on the same file")
    ap.add_argument("--vocab", help="vocab.txt for --ours (default: beside --tokenizer)")
    ap.add_argument("--diff-tool", help="our embedserve-tokenize: run the per-code-point diff")
    ap.add_argument("--diff-out", default="tokenizer_diff.jsonl", help="mismatches go here")
    ap.add_argument("--gen-inc", help="write the C++ override table "
                    "(src/tokenizer/hf_unicode_overrides.inc): every code point whose class in HF "
                    "differs from its Unicode 15.0 category")
    args = ap.parse_args()
    if args.gen_inc:
        tok, version = load_hf(args.tokenizer)
        write_overrides(tok, args.gen_inc, version)
        if not args.diff_tool:
            return 0
    if args.diff_tool:
        return diff_mode(args)
    if not args.sentences:
        ap.error("--sentences is required (except with --diff-tool)")

    with open(args.sentences, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.rstrip("\n")]
    tok, version = load_hf(args.tokenizer)
    all_ids = [tok.encode(t).ids for t in texts]
    n_tokens = sum(len(i) for i in all_ids)
    print(f"texts: {len(texts)} from {args.sentences}; tokens per pass: {n_tokens}; "
          f"HF ids fingerprint {fingerprint(all_ids)}")
    print(f"python {sys.version.split()[0]}, tokenizers {version}, one thread")

    def each():
        for t in texts:
            tok.encode(t)

    passes, secs = time_loop(each, args.min_seconds)
    hf_texts = passes * len(texts) / secs
    hf_tokens = passes * n_tokens / secs
    print(f"HF encode each:   {hf_texts:12,.0f} texts/s {hf_tokens:14,.0f} tokens/s "
          f"({passes} passes in {secs:.2f} s)")
    passes_b, secs_b = time_loop(lambda: tok.encode_batch(texts), args.min_seconds)
    print(f"HF encode_batch:  {passes_b * len(texts) / secs_b:12,.0f} texts/s "
          f"{passes_b * n_tokens / secs_b:14,.0f} tokens/s (reference only)")

    if args.ours:
        vocab = args.vocab or os.path.join(os.path.dirname(args.tokenizer) or ".", "vocab.txt")
        cmd = [args.ours, f"--sentences={args.sentences}", f"--vocab={vocab}",
               "--benchmark_filter=^BM_EncodeEach$", f"--benchmark_min_time={args.min_seconds}",
               "--benchmark_format=json"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for line in res.stderr.splitlines():
            if "fingerprint" in line:
                print(line)
        bench = json.loads(res.stdout)["benchmarks"][0]
        ours_texts, ours_tokens = bench["texts/s"], bench["tokens/s"]
        print(f"ours encode each: {ours_texts:12,.0f} texts/s {ours_tokens:14,.0f} tokens/s")
        print(f"ratio ours/HF (encode each, tokens/s): {ours_tokens / hf_tokens:.2f}x")
        print(f"ratio ours/HF encode_batch (tokens/s): "
              f"{ours_tokens / (passes_b * n_tokens / secs_b):.2f}x")


def hf_class(tok, c):
    """How HF's BertNormalizer/BertPreTokenizer treat code point c (lowercase and accents as
    in all-MiniLM-L6-v2): control (clean_text drops it), mn (strip_accents drops it),
    whitespace, punct (isolated by the pre-tokenizer) or other (an ordinary word character)."""
    from tokenizers import normalizers
    ch = chr(c)
    clean_only = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                            strip_accents=False, lowercase=False)
    if clean_only.normalize_str("a" + ch + "b") == "ab":
        return "control"
    if clean_only.normalize_str("a" + ch + "b") == "a b":
        return "whitespace"
    if tok.normalizer.normalize_str("a" + ch + "b") == "ab":
        return "mn"
    pieces = tok.pre_tokenizer.pre_tokenize_str(clean_only.normalize_str("a" + ch + "b"))
    return "punct" if len(pieces) == 3 else "other"


def unicode15_class(c):
    """What our tokenizer derives from the Unicode category alone (libutf8proc 2.8.0 =
    Unicode 15.0 = Python 3.12's unicodedata), i.e. without the override table."""
    import unicodedata
    if c in (0x09, 0x0A, 0x0D):
        return "whitespace"
    cat = unicodedata.category(chr(c))
    if c == 0 or c == 0xFFFD or cat in ("Cc", "Cf", "Co"):
        return "control"
    if c in (0x20, 0x85) or 0x09 <= c <= 0x0D or cat in ("Zs", "Zl", "Zp"):
        return "whitespace"
    if cat == "Mn":
        return "mn"
    if (33 <= c <= 47 or 58 <= c <= 64 or 91 <= c <= 96 or 123 <= c <= 126
            or cat.startswith("P")):
        return "punct"
    return "other"


def write_overrides(tok, path, version):
    """Ranges of code points whose class in HF differs from what their Unicode 15.0 category
    says, with that category recorded (a test checks it against libutf8proc)."""
    import unicodedata
    if unicodedata.unidata_version != "15.0.0":
        print(f"WARNING: python's unicodedata is {unicodedata.unidata_version}, "
              "libutf8proc 2.8.0 is 15.0.0")
    kinds = {"control": "kHfControl", "mn": "kHfNonSpacingMark", "whitespace": "kHfWhitespace",
             "punct": "kHfPunctuation", "other": "kHfOther"}
    rows, count = [], 0
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ours = unicode15_class(c)
        hf = hf_class(tok, c)
        if hf == ours:
            continue
        count += 1
        k, cat = kinds[hf], unicodedata.category(chr(c))
        if rows and rows[-1][1] == c - 1 and rows[-1][2] == k and rows[-1][3] == cat:
            rows[-1][1] = c
        else:
            rows.append([c, c, k, cat])
    with open(path, "w", encoding="utf-8") as f:
        f.write("// Generated by scripts/device/tokenizer_vs_hf.py --gen-inc: do not edit.\n")
        f.write(f"// Code points where HF tokenizers {version} (whose unicode_categories tables predate\n")
        f.write("// Unicode 9) classes a character differently from what its Unicode "
                f"{unicodedata.unidata_version} category says\n")
        f.write("// (libutf8proc 2.8.0). {first, last, class in HF, Unicode category}.\n")
        for a, b, k, cat in rows:
            f.write(f"{{0x{a:04X}, 0x{b:04X}, HfClass::{k}, UTF8PROC_CATEGORY_{cat.upper()}}},\n")
    print(f"wrote {len(rows)} ranges ({count} code points) to {path}")


def diff_mode(args):
    import tempfile
    import unicodedata
    tok, version = load_hf(args.tokenizer)
    vocab = args.vocab or os.path.join(os.path.dirname(args.tokenizer) or ".", "vocab.txt")
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = ["a" + chr(c) + "b " + chr(c) + chr(c) + "A" for c in cps]
    t0 = time.perf_counter()
    hf = [e.ids for e in tok.encode_batch(texts)]
    t1 = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        path = f.name
    with open(path, "rb") as fin:
        res = subprocess.run([args.diff_tool, "--vocab", vocab], stdin=fin, capture_output=True, check=True)
    t2 = time.perf_counter()
    ours = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    assert len(ours) == len(texts), (len(ours), len(texts))
    bad = []
    for c, h, o in zip(cps, hf, ours):
        if o.get("ids") != h:
            bad.append({"cp": "U+%04X" % c, "cat": unicodedata.category(chr(c)),
                        "name": unicodedata.name(chr(c), ""), "hf": h, "ours": o})
    with open(args.diff_out, "w", encoding="utf-8") as f:
        for b in bad:
            f.write(json.dumps(b) + "\n")
    print(f"tokenizers {version}, python unicodedata {unicodedata.unidata_version}: "
          f"{len(cps)} code points, HF {t1 - t0:.1f} s, ours (CLI incl. JSON) {t2 - t1:.1f} s")
    print(f"mismatching code points: {len(bad)} (details in {args.diff_out})")
    by_cat = {}
    for b in bad:
        by_cat[b["cat"]] = by_cat.get(b["cat"], 0) + 1
    print("by category:", dict(sorted(by_cat.items(), key=lambda kv: -kv[1])))
    for b in bad[:40]:
        print(f"  {b['cp']} {b['cat']} {b['name'][:40]:40} hf={b['hf']} ours={b['ours']}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
