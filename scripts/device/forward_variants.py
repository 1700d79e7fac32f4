#!/usr/bin/env python3
"""Which changes make a MiniLM-L6 (BERT) forward fast on the GPU: the same encoder
written with plain torch ops in the variants the C++ backend can use, timed at the
bench shape (batch 1024 x 16 tokens, fp16) with CUDA events, median of repeats.
  naive     : separate Q/K/V linears, matmul-softmax-matmul attention with additive mask
  fused     : one QKV linear, scaled_dot_product_attention with a boolean mask
  fused_nomask: the same, mask dropped when no sequence is padded (decided on the host)
  graph     : fused_nomask captured once in a CUDA graph and replayed
Each variant is checked against the naive fp32 forward (cosine of the pooled vectors).
Usage (GPU machine): python3 scripts/device/forward_variants.py [--batch 1024 --seq 16]
"""
import argparse
import math
import statistics

import torch
import torch.nn.functional as F

H, L, NH, FF, V, P = 384, 6, 12, 1536, 30522, 512


def make_weights(dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g) * 0.02)
    w = {"word": r(V, H), "pos": r(P, H), "type": r(2, H),
         "ln_e_w": 1 + r(H), "ln_e_b": r(H), "layers": []}
    for _ in range(L):
        w["layers"].append({
            "q_w": r(H, H), "q_b": r(H), "k_w": r(H, H), "k_b": r(H), "v_w": r(H, H),
            "v_b": r(H), "o_w": r(H, H), "o_b": r(H), "ln1_w": 1 + r(H), "ln1_b": r(H),
            "i_w": r(FF, H), "i_b": r(FF), "f_w": r(H, FF), "f_b": r(H),
            "ln2_w": 1 + r(H), "ln2_b": r(H)})
    def conv(x):
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, list):
            return [conv(v) for v in x]
        return x.to(device, dtype).contiguous()
    w = conv(w)
    for lw in w["layers"]:
        lw["qkv_w"] = torch.cat([lw["q_w"], lw["k_w"], lw["v_w"]]).contiguous()
        lw["qkv_b"] = torch.cat([lw["q_b"], lw["k_b"], lw["v_b"]]).contiguous()
    return w


def embed(w, ids):
    b, s = ids.shape
    x = F.embedding(ids, w["word"]) + w["pos"][:s] + w["type"][0]
    return F.layer_norm(x, (H,), w["ln_e_w"], w["ln_e_b"], 1e-12)


def pool(x, mask):
    m = mask.unsqueeze(-1).float()
    return (x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)


def naive(w, ids, mask):
    b, s = ids.shape
    x = embed(w, ids)
    add = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    for lw in w["layers"]:
        q = F.linear(x, lw["q_w"], lw["q_b"]).view(b, s, NH, -1).transpose(1, 2)
        k = F.linear(x, lw["k_w"], lw["k_b"]).view(b, s, NH, -1).transpose(1, 2)
        v = F.linear(x, lw["v_w"], lw["v_b"]).view(b, s, NH, -1).transpose(1, 2)
        a = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(H // NH) + add
        a = torch.softmax(a, -1).matmul(v).transpose(1, 2).reshape(b, s, H)
        x = F.layer_norm(F.linear(a, lw["o_w"], lw["o_b"]) + x, (H,), lw["ln1_w"], lw["ln1_b"], 1e-12)
        h = F.gelu(F.linear(x, lw["i_w"], lw["i_b"]))
        x = F.layer_norm(F.linear(h, lw["f_w"], lw["f_b"]) + x, (H,), lw["ln2_w"], lw["ln2_b"], 1e-12)
    return pool(x, mask)


def fused(w, ids, mask, use_mask=True):
    b, s = ids.shape
    x = embed(w, ids)
    bmask = mask[:, None, None, :].bool() if use_mask else None
    for lw in w["layers"]:
        qkv = F.linear(x, lw["qkv_w"], lw["qkv_b"]).view(b, s, 3, NH, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bmask)
        a = a.transpose(1, 2).reshape(b, s, H)
        x = F.layer_norm(torch.addmm(lw["o_b"], a.view(-1, H), lw["o_w"].t()).view(b, s, H) + x,
                         (H,), lw["ln1_w"], lw["ln1_b"], 1e-12)
        h = F.gelu(torch.addmm(lw["i_b"], x.view(-1, H), lw["i_w"].t()))
        x = F.layer_norm(torch.addmm(lw["f_b"], h, lw["f_w"].t()).view(b, s, H) + x,
                         (H,), lw["ln2_w"], lw["ln2_b"], 1e-12)
    return pool(x, mask)


def capture(w16, ids, mask, static_out):
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fused(w16, ids, mask, use_mask=False)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        static_out["y"] = fused(w16, ids, mask, use_mask=False)
    return g


def fused_matmul_attn(w, ids, mask):
    """Fused QKV and addmm, but attention as matmul-softmax-matmul (no SDPA)."""
    b, s = ids.shape
    x = embed(w, ids)
    add = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    scale = 1.0 / math.sqrt(H // NH)
    for lw in w["layers"]:
        qkv = torch.addmm(lw["qkv_b"], x.view(-1, H), lw["qkv_w"].t()).view(b, s, 3, NH, -1)
        q = qkv[:, :, 0].transpose(1, 2)
        k = qkv[:, :, 1].permute(0, 2, 3, 1)
        v = qkv[:, :, 2].transpose(1, 2)
        a = torch.softmax(torch.baddbmm(add.expand(b, NH, s, s).reshape(-1, s, s),
                                        q.reshape(-1, s, H // NH), k.reshape(-1, H // NH, s),
                                        alpha=scale), -1)
        a = torch.bmm(a, v.reshape(-1, s, H // NH)).view(b, NH, s, -1).transpose(1, 2).reshape(-1, H)
        x = F.layer_norm(torch.addmm(lw["o_b"], a, lw["o_w"].t()).view(b, s, H) + x,
                         (H,), lw["ln1_w"], lw["ln1_b"], 1e-12)
        h = F.gelu(torch.addmm(lw["i_b"], x.view(-1, H), lw["i_w"].t()))
        x = F.layer_norm(torch.addmm(lw["f_b"], h, lw["f_w"].t()).view(b, s, H) + x,
                         (H,), lw["ln2_w"], lw["ln2_b"], 1e-12)
    return pool(x, mask)


def profile(name, fn):
    from torch.profiler import ProfilerActivity, profile as prof
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    print(f"--- profile {name} (5 calls) ---")
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))


def timeit(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); e.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--profile", action="store_true", help="print kernel time tables")
    ap.add_argument("--only-sdpa", action="store_true", help="only the SDPA backend sweep")
    args = ap.parse_args()
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    ids = torch.randint(1000, 30000, (args.batch, args.seq), device=dev)
    mask = torch.ones(args.batch, args.seq, dtype=torch.long, device=dev)
    w32 = make_weights(torch.float32, dev)
    w16 = make_weights(torch.float16, dev)
    print(f"card {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
          f"batch {args.batch} x {args.seq}, fp16 unless named; median of {args.iters}")
    with torch.inference_mode():
        ref = naive(w32, ids, mask).double()
        variants = {
            "naive fp32": lambda: naive(w32, ids, mask),
            "fused fp32": lambda: fused(w32, ids, mask),
            "naive": lambda: naive(w16, ids, mask),
            "fused": lambda: fused(w16, ids, mask),
            "fused_nomask": lambda: fused(w16, ids, mask, use_mask=False),
            "fused_mmattn": lambda: fused_matmul_attn(w16, ids, mask),
        }
        if args.only_sdpa:
            variants = {}
        static_out = {}
        try:
            if args.only_sdpa:
                raise RuntimeError("skipped (--only-sdpa)")
            g = capture(w16, ids, mask, static_out)
            variants["graph"] = lambda: (g.replay(), static_out["y"])[1]
            host_ids = ids.cpu()
            pinned_ids = host_ids.pin_memory()
            pinned_out = torch.empty(static_out["y"].shape, pin_memory=True)
            def graph_io_pageable():
                ids.copy_(host_ids)
                g.replay()
                return static_out["y"].cpu()
            def graph_io_pinned():
                ids.copy_(pinned_ids, non_blocking=True)
                g.replay()
                pinned_out.copy_(static_out["y"], non_blocking=True)
                torch.cuda.current_stream().synchronize()
                return pinned_out
            variants["graph+io pageable"] = graph_io_pageable
            variants["graph+io pinned"] = graph_io_pinned
        except Exception as e:
            print(f"graph capture failed: {e}")
        for name, fn in variants.items():
            try:
                out = fn().double().to(ref.device)
                cos = F.cosine_similarity(out, ref, dim=1).min().item()
                t = timeit(fn, 10, args.iters)
            except Exception as e:  # report and go on with the other variants
                print(f"{name:18s}: failed: {e}")
                continue
            print(f"{name:18s}: {args.batch / t:12,.0f} sentences/s  median {t*1e3:7.3f} ms  "
                  f"min cosine vs naive fp32 {cos:.6f}")
        # scaled_dot_product_attention backends (PyTorch 2.11 prefers cuDNN on sm90).
        from torch.nn.attention import SDPBackend, sdpa_kernel
        for be in [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]:
            for use_mask in [False, True]:
                name = f"sdpa {be.name.lower()}{' +mask' if use_mask else ''}"
                fn = lambda: fused(w16, ids, mask, use_mask=use_mask)
                try:
                    with sdpa_kernel([be]):
                        out = fn().double()
                        cos = F.cosine_similarity(out, ref, dim=1).min().item()
                        t = timeit(fn, 10, args.iters)
                except Exception as e:
                    print(f"{name:26s}: failed: {str(e)[:100]}")
                    continue
                print(f"{name:26s}: {args.batch / t:12,.0f} sentences/s  median {t*1e3:7.3f} ms  "
                      f"min cosine {cos:.6f}")
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                g2 = capture(w16, ids, mask, static_out)
            fn = lambda: (g2.replay(), static_out["y"])[1]
            t = timeit(fn, 10, args.iters)
            cos = F.cosine_similarity(fn().double(), ref, dim=1).min().item()
            print(f"{'graph flash':26s}: {args.batch / t:12,.0f} sentences/s  median {t*1e3:7.3f} ms  "
                  f"min cosine {cos:.6f}")
        except Exception as e:
            print(f"graph flash: failed: {e}")
        if args.profile:
            profile("naive fp16", variants["naive"])
            profile("fused_nomask fp16", variants["fused_nomask"])


if __name__ == "__main__":
    main()
