#!/usr/bin/env python3
"""The Python design embedserve replaces, as a peer: a grpcio server of embedserve.v1's
Embed, Similarity and GetModelInfo (plus grpc.health.v1 Check) whose handlers call
sentence-transformers directly, one request per encode() call, on a thread pool. Written
for bench/peers so that embedserve-bench drives it exactly as it drives embedserve.

Usage: .venv-peers/bin/python bench/peers/py_grpc_server.py --port P [--workers 4]
          [--threads 2] [--device cpu|cuda] [--dtype fp32|fp16]
The stubs are generated from proto/ into a temporary folder at start, with grpcio-tools
where it is installed, else with the protoc and grpc_python_plugin on PATH (the GPU
machine has no grpcio-tools; scripts/device/env.sh puts Debian's on PATH).
"""
import argparse
import os
import sys
import tempfile
import time
from concurrent import futures

import shutil
import subprocess

import grpc
import numpy as np
import torch
from sentence_transformers import SentenceTransformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")


def stubs():
    out = tempfile.mkdtemp(prefix="embedserve_py_stubs_")
    args = [f"--proto_path={ROOT}/proto", f"--python_out={out}", f"--grpc_python_out={out}",
            f"{ROOT}/proto/embedserve/v1/embedding.proto"]
    try:
        import grpc_tools
        from grpc_tools import protoc
        include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rc = protoc.main(["protoc", f"--proto_path={include}"] + args)
    except ImportError:
        plugin = shutil.which("grpc_python_plugin")
        if not shutil.which("protoc") or not plugin:
            sys.exit("py_grpc_server: needs grpcio-tools, or protoc and grpc_python_plugin on PATH")
        rc = subprocess.call(["protoc", f"--plugin=protoc-gen-grpc_python={plugin}"] + args)
    if rc != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    from embedserve.v1 import embedding_pb2, embedding_pb2_grpc
    return embedding_pb2, embedding_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=4, help="gRPC handler threads")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    args = ap.parse_args()
    pb, pb_grpc = stubs()
    torch.set_num_threads(args.threads)
    model = SentenceTransformer(MODEL, device=args.device)
    if args.dtype == "fp16":
        model.half()
    model.encode(["warm up"])

    class Service(pb_grpc.EmbeddingServiceServicer):
        def Embed(self, request, context):
            t0 = time.perf_counter_ns()
            vecs = model.encode(list(request.texts), batch_size=max(1, len(request.texts)),
                                convert_to_numpy=True, show_progress_bar=False)
            reply = pb.EmbedResponse(embeddings=[pb.Embedding(values=v.tolist()) for v in vecs])
            reply.timings.total_us = (time.perf_counter_ns() - t0) // 1000
            return reply

        def Similarity(self, request, context):
            t0 = time.perf_counter_ns()
            texts = []
            for p in request.pairs:
                texts += [p.text_a, p.text_b]
            vecs = model.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                                show_progress_bar=False)
            scores = np.einsum("ij,ij->i", vecs[0::2], vecs[1::2])
            reply = pb.SimilarityResponse(scores=scores.tolist())
            reply.timings.total_us = (time.perf_counter_ns() - t0) // 1000
            return reply

        def GetModelInfo(self, request, context):
            return pb.ModelInfo(name="sentence-transformers/all-MiniLM-L6-v2", dimension=384,
                                max_seq_length=256)

    def health_check(request_bytes, context):
        return b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    pb_grpc.add_EmbeddingServiceServicer_to_server(Service(), server)
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(health_check,
                                                     request_deserializer=lambda b: b,
                                                     response_serializer=lambda b: b)})
    server.add_generic_rpc_handlers((health,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"py_grpc_server: serving on 127.0.0.1:{args.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
