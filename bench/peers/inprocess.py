#!/usr/bin/env python3
"""One in-process peer, closed loop on one thread, as embedserve-bench-inprocess --method
embed measures embedserve: texts in -> L2-normalised vectors out (tokenization included),
for each batch size, after an unmeasured warm-up. Prints one line per batch size and
writes OUT.json: texts/s, calls/s and call latency p50/p99/mean (ms).

  --system st         sentence-transformers SentenceTransformer.encode on torch (CPU, or
                      --device cuda with --dtype fp32 or fp16)
  --system ort        ONNX Runtime session on an exported graph (--onnx FILE) with the
                      Hugging Face fast tokenizer, mean pooling and L2 in numpy
Usage: .venv-peers/bin/python bench/peers/inprocess.py --system st --pairs PAIRS.jsonl \
          --batch-sizes 1,8,32,128 --duration-s 10 --threads 2 --out OUT.json
"""
import argparse
import json
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")


def make_st(threads, device, dtype):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(threads)
    model = SentenceTransformer(MODEL, device=device)
    if dtype == "fp16":
        model.half()

    def run(texts):
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                            show_progress_bar=False)
    import sentence_transformers
    return run, {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__}


def make_ort(onnx_path, threads):
    import onnxruntime as ort
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(MODEL)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    def run(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = sess.run(None, feeds)[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return run, {"onnxruntime": ort.__version__, "onnx_file": os.path.basename(onnx_path)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", choices=["st", "ort"], required=True)
    ap.add_argument("--onnx")
    ap.add_argument("--name")
    ap.add_argument("--pairs", required=True, help="JSON Lines of {text_a, text_b}: text_a is embedded")
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--duration-s", type=float, default=10)
    ap.add_argument("--warmup-s", type=float, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="st only: cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="st only")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    texts = [json.loads(line)["text_a"] for line in open(args.pairs)]
    if args.system == "st":
        run, versions = make_st(args.threads, args.device, args.dtype)
    else:
        run, versions = make_ort(args.onnx, args.threads)
    name = args.name or args.system
    points = []
    cursor = 0
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        lat = []
        start = time.perf_counter()
        warm_end = start + args.warmup_s
        end = warm_end + args.duration_s
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            chunk = [texts[(cursor + i) % len(texts)] for i in range(batch)]
            cursor += batch
            run(chunk)
            t1 = time.perf_counter()
            if t1 >= warm_end and t1 <= end:
                lat.append((t1 - t0) * 1e3)
        lat_ms = np.array(lat)
        point = {"batch_size": batch, "calls": len(lat), "texts_per_s": len(lat) * batch / args.duration_s,
                 "calls_per_s": len(lat) / args.duration_s, "p50_ms": float(np.percentile(lat_ms, 50)),
                 "p99_ms": float(np.percentile(lat_ms, 99)), "mean_ms": float(lat_ms.mean())}
        points.append(point)
        print(f"[{name}] batch={batch}: {point['texts_per_s']:.1f} texts/s | ms p50 {point['p50_ms']:.2f} "
              f"p99 {point['p99_ms']:.2f} mean {point['mean_ms']:.2f}", flush=True)
    with open(args.out, "w") as f:
        json.dump({"system": name, "threads": args.threads, "device": args.device,
                   "dtype": args.dtype, "versions": versions,
                   "duration_s": args.duration_s, "points": points}, f, indent=1)


if __name__ == "__main__":
    main()
