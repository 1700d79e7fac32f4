#!/usr/bin/env python3
"""bench/grpc: grpc_floor_server on both APIs, and floor.sh driving it beside the server.

grpc_floor_server must answer as embedserve's gRPC surface does (one score per pair, one
vector of --dim values per text, INVALID_ARGUMENT for bytes that are not the request),
keep answering once more calls are in flight than it posted ahead (--api cq reposts each
call), and stop cleanly on SIGTERM. floor.sh must measure every system at every point and
write its table. Debian's python3 with python3-grpcio and the embedding.proto stubs that
tests/e2e generates.

Env: FLOOR_SERVER (the binary), FLOOR_SH (bench/grpc/floor.sh), BUILD_DIR (the build with
embedserve and embedserve-bench), STUBS_DIR (the generated stubs), WORK_DIR.
"""
import csv
import os
import re
import signal
import subprocess
import sys
import unittest
from concurrent.futures import ThreadPoolExecutor

import grpc

sys.path.insert(0, os.environ["STUBS_DIR"])
from embedserve.v1 import embedding_pb2 as pb  # noqa: E402
from embedserve.v1 import embedding_pb2_grpc as pb_grpc  # noqa: E402


class FloorServer:
    def __init__(self, *args):
        self.proc = subprocess.Popen([os.environ["FLOOR_SERVER"], "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"no listening line: {line!r}")
        self.channel = grpc.insecure_channel(line.split()[2])
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)

    def stop(self):
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


class GrpcFloorServerTest(unittest.TestCase):
    def check_api(self, *args):
        server = FloorServer("--dim", "8", *args)
        try:
            pairs = [pb.TextPair(text_a=a, text_b=b)
                     for a, b in (("a", "b"), ("c", "d"), ("é", "ß"))]
            reply = server.stub.Similarity(pb.SimilarityRequest(pairs=pairs, id="s1"), timeout=10)
            self.assertEqual(list(reply.scores), [0.5, 0.5, 0.5])
            self.assertEqual(reply.id, "s1")

            reply = server.stub.Embed(pb.EmbedRequest(texts=["one", "two"]), timeout=10)
            self.assertEqual([list(e.values) for e in reply.embeddings], [[0.0] * 8] * 2)

            info = server.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            self.assertEqual(info.name, "grpc_floor_server")

            # Bytes that are no SimilarityRequest, sent raw.
            raw = server.channel.unary_unary("/embedserve.v1.EmbeddingService/Similarity")
            with self.assertRaises(grpc.RpcError) as caught:
                raw(b"\xff\xff\xff", timeout=10)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

            # More calls in flight than the queues posted ahead (cq: 2 x 4): every one answered.
            request = pb.SimilarityRequest(pairs=[pb.TextPair(text_a="x", text_b="y")])
            with ThreadPoolExecutor(24) as pool:
                replies = list(pool.map(
                    lambda _: server.stub.Similarity(request, timeout=10), range(240)))
            self.assertTrue(all(list(r.scores) == [0.5] for r in replies))
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
        # server-queues: the real server again, Embed and Similarity on two completion
        # queues (server.grpc_queues), through floor.sh's SERVER_ARGS_LABEL.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(os.environ["FLOOR_SH"]))))
        with open(os.path.join(root, "experiments", "minilm_batching.yaml")) as f:
            config = f.read()
        config = re.sub(r"(?m)^  metrics_port: .*$", "  metrics_port: -1", config)
        config = re.sub(r"(?m)^  device: .*$", "  device: cpu", config)
        config = config.replace("server:\n", "server:\n  grpc_queues: 2\n", 1)
        self.assertIn("grpc_queues: 2", config)
        os.makedirs(os.environ["WORK_DIR"], exist_ok=True)
        queues_yaml = os.path.join(os.environ["WORK_DIR"], "queues.yaml")
        with open(queues_yaml, "w") as f:
            f.write(config)
        env = dict(os.environ, ROUNDS="1", DURATION="2", POINTS="1/1/1 2/4/2", CQ_THREADS="2",
                   SYSTEMS="floor-callback floor-cq server server-queues",
                   SERVER_ARGS_queues="--config %s --model %s" % (
                       queues_yaml, os.path.join(root, "tests", "data", "tiny-bert")))
        proc = subprocess.run([os.environ["FLOOR_SH"], out], env=env, capture_output=True,
                              text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        rows = list(csv.DictReader(open(os.path.join(out, "floor.tsv")), delimiter="\t"))
        seen = {(r["system"], r["batch"], r["concurrency"], r["channels"]) for r in rows}
        systems = ("floor-callback", "floor-cq", "server", "server-queues")
        self.assertEqual(seen, {(s, b, c, ch) for s in systems
                                for b, c, ch in (("1", "1", "1"), ("2", "4", "2"))})
        # server-queues ran its two queue threads (es-grpc-N), the callback server none.
        def samples(system):
            text = ""
            for name in sorted(os.listdir(out)):
                if name.startswith("cpu_%s_" % system):
                    with open(os.path.join(out, name)) as f:
                        text += f.read()
            return text
        self.assertRegex(samples("server-queues"), r"by kind of thread: .*\bes-grpc x2 ")
        self.assertNotIn("es-grpc", samples("server"))
        for r in rows:
            self.assertGreater(float(r["pairs_per_s"]), 0, r)
            self.assertGreater(float(r["server_cpu_pct"]), 0, r)
            self.assertLessEqual(float(r["p50_ms"]), float(r["p99_ms"]), r)
        # The real server's batcher workers run its model; the floor has none.
        for r in rows:
            workers = float(r["server_workers_cpu_pct"])
            if r["system"].startswith("server"):
                self.assertGreater(workers, 0, r)
            else:
                self.assertEqual(workers, 0, r)
        table = open(os.path.join(out, "summary.md")).read().splitlines()
        self.assertEqual(len(table), 2 + len(rows))
        self.assertTrue(all(line.startswith("| 1 | ") for line in table[2:]), table)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
