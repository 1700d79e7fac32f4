#!/usr/bin/env python3
"""bench/grpc: grpc_floor_server on both APIs, and floor.sh driving it beside the server.

grpc_floor_server must answer as embedserve's gRPC surface does (one score per pair, one
vector of --dim values per text, INVALID_ARGUMENT for bytes that are not the request),
keep answering once more calls are in flight than it posted ahead (--api cq reposts each
call), and stop cleanly on SIGTERM. floor.sh must measure every system at every point and
write its table. Debian's python3 with python3-grpcio; requests are hand-encoded.

Env: FLOOR_SERVER (the binary), FLOOR_SH (bench/grpc/floor.sh), BUILD_DIR (the build with
embedserve and embedserve-bench), WORK_DIR.
"""
import csv
import os
import signal
import struct
import subprocess
import sys
import unittest
from concurrent.futures import ThreadPoolExecutor

import grpc

SERVICE = "/embedserve.v1.EmbeddingService/"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, payload):
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf):
    """(number, wire type, value) of each top-level field of a message."""
    out, i = [], 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            length, i = read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def floats(values):
    """repeated float, packed (one field) or not."""
    out = []
    for _, wire, v in values:
        out.extend(struct.unpack(f"<{len(v) // 4}f", v))
    return out


def similarity_request(pairs):
    return b"".join(field(1, field(1, a.encode()) + field(2, b.encode())) for a, b in pairs)


def embed_request(texts):
    return b"".join(field(1, t.encode()) for t in texts)


class FloorServer:
    def __init__(self, *args):
        self.proc = subprocess.Popen([os.environ["FLOOR_SERVER"], "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"no listening line: {line!r}")
        self.target = line.split()[2]
        self.channel = grpc.insecure_channel(self.target)

    def call(self, method, request, timeout=10):
        fn = self.channel.unary_unary(SERVICE + method)
        return fn(request, timeout=timeout)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


class GrpcFloorServerTest(unittest.TestCase):
    def check_api(self, *args):
        server = FloorServer("--dim", "8", *args)
        try:
            reply = server.call("Similarity", similarity_request(
                [("a", "b"), ("c", "d"), ("é", "ß")]))
            scores = floats([f for f in fields(reply) if f[0] == 1])
            self.assertEqual(scores, [0.5, 0.5, 0.5])

            reply = server.call("Embed", embed_request(["one", "two"]))
            vectors = [floats(fields(v)) for n, _, v in fields(reply) if n == 1]
            self.assertEqual(vectors, [[0.0] * 8, [0.0] * 8])

            info = dict((n, v) for n, _, v in fields(server.call("GetModelInfo", b"")))
            self.assertEqual(info[1], b"grpc_floor_server")

            with self.assertRaises(grpc.RpcError) as caught:
                server.call("Similarity", b"\xff\xff\xff")
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

            # More calls in flight than the queues posted ahead (cq: 2 x 4): every one answered.
            request = similarity_request([("x", "y")])
            with ThreadPoolExecutor(24) as pool:
                replies = list(pool.map(lambda _: server.call("Similarity", request), range(240)))
            self.assertTrue(all(floats([f for f in fields(r) if f[0] == 1]) == [0.5]
                                for r in replies))
        finally:
            self.assertEqual(server.stop(), 0)

    def test_callback_api(self):
        self.check_api("--api", "callback")

    def test_completion_queue_api(self):
        self.check_api("--api", "cq", "--cq-threads", "2", "--calls-per-cq", "4")

    def test_unknown_api_is_refused(self):
        proc = subprocess.run([os.environ["FLOOR_SERVER"], "--api", "sync"],
                              capture_output=True, text=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("sync", proc.stderr)


class FloorScriptTest(unittest.TestCase):
    def test_every_system_measured_at_every_point(self):
        out = os.path.join(os.environ["WORK_DIR"], "floor")
        env = dict(os.environ, ROUNDS="1", DURATION="1", POINTS="1/1/1 2/4/2", CQ_THREADS="2")
        proc = subprocess.run([os.environ["FLOOR_SH"], out], env=env, capture_output=True,
                              text=True, timeout=240)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        rows = list(csv.DictReader(open(os.path.join(out, "floor.tsv")), delimiter="\t"))
        seen = {(r["system"], r["batch"], r["concurrency"], r["channels"]) for r in rows}
        self.assertEqual(seen, {(s, b, c, ch) for s in ("floor-callback", "floor-cq", "server")
                                for b, c, ch in (("1", "1", "1"), ("2", "4", "2"))})
        for r in rows:
            self.assertGreater(float(r["pairs_per_s"]), 0, r)
            self.assertGreater(float(r["server_cpu_pct"]), 0, r)
            self.assertLessEqual(float(r["p50_ms"]), float(r["p99_ms"]), r)
        # The real server's batcher workers run its model; the floor has none.
        for r in rows:
            workers = float(r["server_workers_cpu_pct"])
            if r["system"] == "server":
                self.assertGreater(workers, 0, r)
            else:
                self.assertEqual(workers, 0, r)
        table = open(os.path.join(out, "summary.md")).read().splitlines()
        self.assertEqual(len(table), 2 + len(rows))
        self.assertTrue(all(line.startswith("| 1 | ") for line in table[2:]), table)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
