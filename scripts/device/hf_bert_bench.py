#!/usr/bin/env python3
"""Baseline for the H100 speed target (issue 3): Hugging Face's eager BertModel in
fp16 on the GPU, all-MiniLM-L6-v2 shapes (random weights: speed does not depend on
them), input already on the GPU, CUDA-event timing after warm-up, median of repeats.
Prints one line per attention implementation: sentences/s = batch / median seconds.
Usage (GPU machine): python3 scripts/device/hf_bert_bench.py [--batch 1024] [--seq 16]
"""
import argparse
import statistics

import torch
from transformers import BertConfig, BertModel


def bench(attn, batch, seq, warmup, iters, dtype, compiled=False):
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                     num_attention_heads=12, intermediate_size=1536,
                     max_position_embeddings=512, hidden_act="gelu")
    cfg._attn_implementation = attn
    model = BertModel(cfg, add_pooling_layer=False).to("cuda", dtype).eval()
    if compiled:  # inductor, static shapes: the best torch.compile gives this shape
        model = torch.compile(model, dynamic=False)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), device="cuda", generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long, device="cuda")
    with torch.inference_mode():
        for _ in range(warmup):
            model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            model(input_ids=ids, attention_mask=mask)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
    med = statistics.median(times)
    return med, batch / med, min(times), max(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--variants", default="eager,sdpa",
                    help="comma-separated: eager, sdpa, compile (sdpa under torch.compile)")
    args = ap.parse_args()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    import transformers
    print(f"card {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
          f"transformers {transformers.__version__}; batch {args.batch} x {args.seq} tokens "
          f"{args.dtype}; median of {args.iters} after {args.warmup} warm-up")
    for variant in args.variants.split(","):
        attn = "sdpa" if variant == "compile" else variant
        try:
            med, sps, lo, hi = bench(attn, args.batch, args.seq, args.warmup, args.iters, dtype,
                                     compiled=variant == "compile")
            print(f"HF BertModel {variant}: {sps:,.0f} sentences/s "
                  f"(median {med*1e3:.3f} ms, min {lo*1e3:.3f}, max {hi*1e3:.3f})")
        except Exception as e:  # an implementation this transformers lacks
            print(f"HF BertModel {variant}: failed: {e}")


if __name__ == "__main__":
    main()
