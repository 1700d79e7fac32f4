#!/usr/bin/python3
"""A small embedserve client (Debian's python3 + python3-grpcio + python3-protobuf).

  /usr/bin/python3 examples/python_client.py --address 127.0.0.1:50051 "hello world" "hi there"

A server with TLS / mTLS / API keys (docs/security.md): --ca CA.pem [--cert client.pem
--key client.key]; the API key from $EMBEDSERVE_API_KEY (sent as authorization: Bearer).

Generates the Python stubs from proto/embedserve/v1/embedding.proto on first use (protoc
and grpc_python_plugin, from scripts/setup.sh) into build/python-stubs/ (or
$EMBEDSERVE_PY_STUBS), then calls
GetModelInfo, Embed, Similarity and Tokenize.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.environ.get("EMBEDSERVE_PY_STUBS", os.path.join(ROOT, "build", "python-stubs"))


def import_stubs():
    if not os.path.exists(os.path.join(STUBS, "embedserve", "v1", "embedding_pb2_grpc.py")):
        os.makedirs(STUBS, exist_ok=True)
        subprocess.run(["protoc", f"--proto_path={ROOT}/proto", f"--python_out={STUBS}",
                        f"--grpc_python_out={STUBS}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                        f"{ROOT}/proto/embedserve/v1/embedding.proto"], check=True)
    sys.path.insert(0, STUBS)
    from embedserve.v1 import embedding_pb2, embedding_pb2_grpc
    return embedding_pb2, embedding_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--ca", help="PEM CA file that signed the server's certificate: TLS")
    parser.add_argument("--cert", help="PEM client certificate (mTLS; with --key)")
    parser.add_argument("--key", help="PEM key of --cert")
    parser.add_argument("texts", nargs="*", default=["hello world", "a sentence to embed"])
    args = parser.parse_args()

    import grpc
    pb, pb_grpc = import_stubs()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.key) if args.key else None,
            certificate_chain=read(args.cert) if args.cert else None)
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    api_key = os.environ.get("EMBEDSERVE_API_KEY")
    md = [("authorization", "Bearer " + api_key)] if api_key else None
    with channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)

        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10, metadata=md)
        print(f"model {info.name} ({'synthetic' if info.synthetic else 'pretrained'}), "
              f"{info.dimension} dims, {info.device} {info.precision}, "
              f"max {info.max_seq_length} tokens")

        # Embed: one vector per text, L2-normalised as the model folder says (or as
        # normalize= asks); texts longer than max_seq_length are truncated unless
        # truncate=False.
        r = stub.Embed(pb.EmbedRequest(texts=args.texts, id="example"), timeout=30, metadata=md)
        for text, e in zip(args.texts, r.embeddings):
            head = ", ".join(f"{v:+.4f}" for v in e.values[:4])
            print(f"embed {text!r}: [{head}, ...] ({len(e.values)} values)")
        t = r.timings
        print(f"usage {r.usage.prompt_tokens} tokens; server time {t.total_us} us "
              f"(tokenize {t.tokenize_us}, queue {t.queue_us}, inference {t.inference_us})")

        # Similarity: cosine of each pair (each distinct text is embedded once).
        if len(args.texts) >= 2:
            pairs = [pb.TextPair(text_a=args.texts[0], text_b=t) for t in args.texts[1:]]
            s = stub.Similarity(pb.SimilarityRequest(pairs=pairs), timeout=30, metadata=md)
            for p, score in zip(pairs, s.scores):
                print(f"similarity {p.text_a!r} ~ {p.text_b!r}: {score:.4f}")

        # Tokenize: the ids the model sees, [CLS] ... [SEP].
        tok = stub.Tokenize(pb.TokenizeRequest(texts=args.texts[:1]), timeout=10, metadata=md)
        print(f"tokens {args.texts[0]!r}: {list(tok.tokens[0].ids)}")

        # Errors are gRPC status codes with a message saying what to change.
        try:
            stub.Embed(pb.EmbedRequest(texts=[]), timeout=10, metadata=md)
        except grpc.RpcError as e:
            print(f"empty request -> {e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
