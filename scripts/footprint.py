#!/usr/bin/python3
"""Start-up time and memory of embedserve serving an experiment.

Starts the server RUNS times. For each run: the time from starting the process to the
first grpc.health.v1 Check that answers SERVING (polled every 5 ms; SERVING comes after
the model is loaded and, with server.warmup, one batch has run; a SIGTERM is sent
at the end of each run), the RSS at that moment
(VmRSS), and the RSS after REQUESTS Embed calls of 32 English sentences each (the
steady state of a warm server), with the peak (VmHWM). Prints one line per run and the
medians.

Usage (repository root, after a build):
  /usr/bin/python3 scripts/footprint.py [--config experiments/minilm_batching.yaml]
      [--server build/tools/server/embedserve] [--runs 5] [--requests 100]
Debian's python3 (python3-grpcio).
"""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import grpc



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


# grpc.health.v1.HealthCheckRequest{} is empty; a SERVING HealthCheckResponse is
# field 1 (status) = 1, i.e. the bytes 08 01.
def check(channel):
    call = channel.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return call(b"", timeout=1) == b"\x08\x01"
    except grpc.RpcError:
        return False


def embed_request(texts):
    # embedserve.v1.EmbedRequest: repeated string texts = 1.
    out = bytearray()
    for t in texts:
        b = t.encode()
        out += b"\x0a" + encode_varint(len(b)) + b
    return bytes(out)


def encode_varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def one_run(args, sentences):
    port = free_port()
    cmd = [args.server, "--config", args.config, "--port", str(port), "--metrics-port", "-1",
           "--log-level", "warn"]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env)
    try:
        # Wait for the port to accept first: gRPC's reconnect backoff after a refused
        # connect would add seconds of its own. The server listens before it loads the
        # model (health NOT_SERVING meanwhile), so SERVING is still polled below.
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            time.sleep(0.002)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        while not check(channel):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            if time.monotonic() - t0 > 60:
                raise RuntimeError("not SERVING after 60 s")
            time.sleep(0.005)
        to_serving = time.monotonic() - t0
        rss_serving = rss_kb(proc.pid)
        embed = channel.unary_unary("/embedserve.v1.EmbeddingService/Embed",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        request = embed_request(sentences[:32])
        for _ in range(args.requests):
            embed(request, timeout=30)
        rss_warm = rss_kb(proc.pid)
        peak = rss_kb(proc.pid, "VmHWM")
        channel.close()
        return to_serving, rss_serving / 1024, rss_warm / 1024, peak / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--config", default="experiments/minilm_batching.yaml")
    ap.add_argument("--server", default="build/tools/server/embedserve")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    with open("bench/data/english_sentences.txt") as f:
        sentences = [line.strip() for line in f if line.strip()]
    rows = []
    print("run  to_SERVING_s  RSS_at_SERVING_MB  RSS_after_requests_MB  peak_RSS_MB")
    for i in range(args.runs):
        r = one_run(args, sentences)
        rows.append(r)
        print(f"{i + 1:3d}  {r[0]:12.3f}  {r[1]:17.1f}  {r[2]:21.1f}  {r[3]:11.1f}", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median  {med[0]:.3f} s to SERVING; RSS {med[1]:.1f} MB at SERVING, "
          f"{med[2]:.1f} MB after {args.requests} Embed calls of 32 texts (peak {med[3]:.1f} MB)")


if __name__ == "__main__":
    main()
