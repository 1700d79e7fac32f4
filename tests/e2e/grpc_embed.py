#!/usr/bin/python3
"""Prints gRPC Embed's vectors for texts as JSON: the reference the HTTP end-to-end test
compares its clients' vectors with. Runs under Debian's python3 (python3-grpcio), which
the test's virtual environment does not have.

  /usr/bin/python3 grpc_embed.py --stubs BUILD/tests/e2e/py --address 127.0.0.1:PORT < texts.json
"""
import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--stubs", required=True)
parser.add_argument("--address", required=True)
args = parser.parse_args()
sys.path.insert(0, args.stubs)
import grpc  # noqa: E402
from embedserve.v1 import embedding_pb2 as pb, embedding_pb2_grpc as pb_grpc  # noqa: E402

texts = json.load(sys.stdin)
with grpc.insecure_channel(args.address) as channel:
    stub = pb_grpc.EmbeddingServiceStub(channel)
    r = stub.Embed(pb.EmbedRequest(texts=texts), timeout=30)
    json.dump({"vectors": [list(e.values) for e in r.embeddings],
               "prompt_tokens": r.usage.prompt_tokens}, sys.stdout)
