#!/usr/bin/env bash
# grpcurl examples (https://github.com/fullstorydev/grpcurl). The server has reflection
# on, so no -proto flag is needed. Usage: examples/grpcurl.sh [HOST:PORT]
set -euo pipefail
ADDR=${1:-127.0.0.1:50051}

grpcurl -plaintext "$ADDR" list
grpcurl -plaintext "$ADDR" describe embedserve.v1.EmbeddingService
grpcurl -plaintext "$ADDR" embedserve.v1.EmbeddingService/GetModelInfo
grpcurl -plaintext -d '{"texts": ["hello world", "a second text"], "id": "r1"}' \
  "$ADDR" embedserve.v1.EmbeddingService/Embed
grpcurl -plaintext -d '{"pairs": [{"text_a": "a cat sat", "text_b": "a dog ran"}]}' \
  "$ADDR" embedserve.v1.EmbeddingService/Similarity
grpcurl -plaintext -d '{"texts": ["i like strawberries"]}' \
  "$ADDR" embedserve.v1.EmbeddingService/Tokenize
# Health (what Kubernetes gRPC probes call): SERVING once the model is warmed up.
grpcurl -plaintext -d '{"service": "embedserve.v1.EmbeddingService"}' "$ADDR" grpc.health.v1.Health/Check
