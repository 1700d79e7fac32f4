#!/usr/bin/python3
"""The `embedserve` binary with several model instances: `model.devices: [cpu, cpu]`
(and `device: cpu` with `instances_per_device: 2`), tests/data/tiny-bert. The log and
GetModelInfo say what runs where, the batcher runs a worker per instance, and the vectors
equal sentence-transformers' (the single-instance golden file). That each instance runs
batches is checked in-process by backend_pool_model_test.

Run by ctest (tests/e2e/CMakeLists.txt):
  /usr/bin/python3 multi_device_e2e_test.py --binary BUILD/tools/server/embedserve \
      --stubs BUILD/tests/e2e/py --data tests/data --cluster scripts/cluster
"""
import json
import os
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor

ARGS = None


class MultiDeviceTest(unittest.TestCase):
    def serve(self, model_yaml):
        config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        config.write("model:\n" + model_yaml + "  threads: 1\n"
                     "batching:\n  max_batch_size: 4\n  timeout_ms: 1\n")
        config.close()
        self.addCleanup(os.unlink, config.name)
        workdir = tempfile.mkdtemp(prefix="embedserve-multi-")
        replica = cluster.Replica(0, ARGS.binary, config.name,
                                  os.path.join(ARGS.data, "tiny-bert"), workdir)
        replica.start()
        self.addCleanup(lambda: (replica.stop(), os.unlink(replica.log_path),
                                 os.rmdir(workdir)))
        replica.wait_serving(60)
        channel = grpc.insecure_channel(f"127.0.0.1:{replica.port}")
        self.addCleanup(channel.close)
        return replica, pb_grpc.EmbeddingServiceStub(channel)

    def check_serves_golden(self, stub):
        with open(os.path.join(ARGS.data, "tiny-bert_embeddings.jsonl")) as f:
            golden = [json.loads(line) for _, line in zip(range(24), f)]
        # Concurrent single-text calls, so that batches form and both workers take some.
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(
                lambda g: stub.Embed(pb.EmbedRequest(texts=[g["text"]]), timeout=30), golden))
        for reply, want in zip(replies, golden):
            for a, b in zip(reply.embeddings[0].values, want["embedding"]):
                # fp32 CPU LibTorch vs the PyTorch reference, rounded to 7 decimals (as
                # server_e2e_test).
                self.assertAlmostEqual(a, b, delta=2e-5)

    def test_devices_list(self):
        replica, stub = self.serve("  devices: [cpu, cpu]\n")
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        self.assertEqual(info.device, "cpu,cpu")
        self.assertEqual(info.batching.workers, 2)  # batching.workers (1) per instance
        self.assertIn("instance 2 of 2", replica.log())
        self.assertRegex(replica.log(), r"Loaded .* on cpu,cpu, FP32, .*2 workers\)")
        self.check_serves_golden(stub)

    def test_instances_per_device(self):
        replica, stub = self.serve("  device: cpu\n  instances_per_device: 2\n")
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        self.assertEqual(info.device, "cpu,cpu")
        self.assertEqual(info.batching.workers, 2)
        self.check_serves_golden(stub)


if __name__ == "__main__":
    import replica_harness
    ARGS, argv, grpc, cluster, pb, pb_grpc = replica_harness.setup()
    unittest.main(argv=argv, verbosity=2)
