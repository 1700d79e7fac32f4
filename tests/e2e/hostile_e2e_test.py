#!/usr/bin/python3
"""Hostile clients and signals against the real `embedserve` binary (issue 12's items
1, 5, 6, 7 and 13; docs/hostile_inputs.md maps each item to its test): a compression
bomb (peak RSS), a slow /metrics client during SIGTERM, a second server on a busy port,
64 clients through SIGTERM, and SIGTERM before SERVING. Every wait is bounded.

Run by ctest (tests/e2e/CMakeLists.txt):
  /usr/bin/python3 hostile_e2e_test.py --binary BUILD/tools/server/embedserve \
      --stubs BUILD/tests/e2e/py --data tests/data
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import server_e2e_test as e2e

ARGS = None


def vm_hwm_kb(pid):
    """Peak resident set size of `pid` (VmHWM), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def wait_for(condition, seconds):
    """Polls `condition` until it holds or `seconds` pass; returns its last value."""
    deadline = time.time() + seconds
    value = condition()
    while not value and time.time() < deadline:
        time.sleep(0.01)
        value = condition()
    return value


class ServingServerTest(unittest.TestCase):
    """Tests that need one served tiny-bert server each."""

    def start(self, extra_yaml=""):
        server = e2e.Server(ARGS.binary, os.path.join(ARGS.data, "tiny-bert"), extra_yaml)
        self.addCleanup(server.stop)
        channel = e2e.grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.addCleanup(channel.close)
        self.assertTrue(e2e.wait_serving(channel), server.log())
        return server, channel, e2e.pb_grpc.EmbeddingServiceStub(channel)

    def test_item1_compression_bomb_is_refused_before_inflating(self):
        server, _, stub = self.start()
        before = vm_hwm_kb(server.proc.pid)
        # 96 MiB of one letter: about 100 KB of gzip on the wire. gRPC 1.51 inflated it
        # whole before checking max_message_bytes (peak RSS +100 MB and more).
        bomb = e2e.pb.EmbedRequest(texts=["a" * (96 << 20)])
        with self.assertRaises(e2e.grpc.RpcError) as e:
            stub.Embed(bomb, timeout=60, compression=e2e.grpc.Compression.Gzip)
        self.assertEqual(e.exception.code(), e2e.grpc.StatusCode.UNIMPLEMENTED,
                         e.exception.details())
        del bomb
        grown_mb = (vm_hwm_kb(server.proc.pid) - before) / 1024
        print(f"\n  compression bomb: peak RSS grew {grown_mb:.1f} MB", file=sys.stderr)
        self.assertLess(grown_mb, 32)
        self.assertEqual(len(stub.Embed(e2e.pb.EmbedRequest(texts=["ok"]), timeout=10)
                             .embeddings), 1)

    def test_item5_slow_metrics_client_blocks_neither_scrapes_nor_exit(self):
        server, _, _ = self.start()
        slow = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)
        self.addCleanup(slow.close)
        stop = threading.Event()

        def trickle():  # a header byte every 0.5 s until told to stop or dropped
            try:
                slow.sendall(b"GET /metrics HTTP/1.1\r\nHo")
                for _ in range(120):
                    if stop.wait(0.5):
                        return
                    slow.sendall(b"s")
            except OSError:
                pass
        trickler = threading.Thread(target=trickle)
        trickler.start()
        self.addCleanup(trickler.join)
        self.addCleanup(stop.set)
        for _ in range(3):
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
                self.assertIn("embedserve_requests_total", r.read().decode())
        t0 = time.time()
        server.proc.send_signal(signal.SIGTERM)
        rc = server.proc.wait(30)
        took = time.time() - t0
        print(f"\n  slow /metrics client: exit {took:.2f} s after SIGTERM", file=sys.stderr)
        self.assertEqual(rc, 0, server.log())
        self.assertLess(took, 5, "the exit waited for the slow client (grace is 20 s)")

    def test_item7_sigterm_under_64_clients_refuses_with_unavailable_only(self):
        server, channel, stub = self.start("batching:\n  timeout_ms: 2\n")
        codes = {}
        answered_after = [0]
        lock = threading.Lock()
        sigterm_at = [None]
        started = threading.Barrier(65)

        def client(i):
            # One channel per client, as separate processes would have.
            with e2e.grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                s = e2e.pb_grpc.EmbeddingServiceStub(ch)
                s.Embed(e2e.pb.EmbedRequest(texts=["warm"]), timeout=30)
                started.wait(30)
                deadline = time.time() + 30
                while time.time() < deadline:
                    try:
                        s.Embed(e2e.pb.EmbedRequest(texts=[f"client {i} text"] * 4), timeout=30)
                        code = "OK"
                    except e2e.grpc.RpcError as e:
                        code = e.code().name
                    with lock:
                        codes[code] = codes.get(code, 0) + 1
                        if code == "OK" and sigterm_at[0] is not None:
                            answered_after[0] += 1
                    if code != "OK":
                        return
        threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        started.wait(30)
        # SIGTERM once calls are flowing: each client has had at least one answered.
        wait_for(lambda: sum(codes.values()) >= 64, 30)
        with lock:
            sigterm_at[0] = time.time()
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        rc = server.proc.wait(60)
        print(f"\n  SIGTERM under 64 clients: {codes}, {answered_after[0]} answered after "
              f"SIGTERM, exit {time.time() - sigterm_at[0]:.2f} s after it", file=sys.stderr)
        self.assertEqual(rc, 0, server.log())
        self.assertNotIn("CANCELLED", codes)
        self.assertEqual(set(codes) - {"OK", "UNAVAILABLE"}, set(), codes)
        self.assertEqual(codes.get("UNAVAILABLE", 0), 64, codes)  # each client stopped once


class StartTest(unittest.TestCase):
    """The process before it serves: busy ports and early signals."""

    def spawn(self, *args):
        proc = subprocess.Popen([ARGS.binary, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
            proc.stdout.close()
        self.addCleanup(stop)

        def log():  # everything it printed (all of it once it has exited)
            if proc.poll() is not None:
                reader.join(10)
            return "".join(lines)
        return proc, log

    def test_item6_second_server_on_the_same_grpc_port_fails_clearly(self):
        first = e2e.Server(ARGS.binary, os.path.join(ARGS.data, "tiny-bert"))
        self.addCleanup(first.stop)
        proc, log = self.spawn("--port", str(first.port), "--metrics-port", "0",
                               "--http-port", "0", "--device", "cpu",
                               "--model", os.path.join(ARGS.data, "tiny-bert"))
        rc = proc.wait(60)
        self.assertEqual(rc, 1, log())
        self.assertIn(f"cannot listen on 127.0.0.1:{first.port}", log())

    def test_item13_sigterm_as_soon_as_the_process_runs_exits_0(self):
        proc, log = self.spawn("--port", "0", "--metrics-port", "-1", "--http-port", "-1",
                               "--device", "cpu", "--model", os.path.join(ARGS.data, "tiny-bert"))

        def sigterm_blocked():  # set from .preinit_array, before any library initializer
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    blocked = re.search(r"^SigBlk:\s*([0-9a-f]+)", f.read(), re.M)
                return blocked is not None and int(blocked.group(1), 16) & (1 << (signal.SIGTERM - 1))
            except OSError:
                return False
        self.assertTrue(wait_for(sigterm_blocked, 60), log())
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        self.assertEqual(rc, 0, log())
        self.assertNotIn("Loaded", log())  # never served

    def test_item13_sigterm_while_the_model_loads_exits_0_without_serving(self):
        # A model folder whose config.json is a FIFO: loading blocks on it until the test
        # writes the real file into it, so SIGTERM lands while the model loads.
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        source = os.path.join(ARGS.data, "tiny-bert")
        for name in os.listdir(source):
            if name != "config.json":
                os.symlink(os.path.join(source, name), os.path.join(folder, name))
        fifo = os.path.join(folder, "config.json")
        os.mkfifo(fifo)
        with socket.socket() as s:  # a port that was free a moment ago
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc, log = self.spawn("--port", str(port), "--metrics-port", "-1", "--http-port", "-1",
                                 "--device", "cpu", "--model", folder)
        channel = e2e.grpc.insecure_channel(f"127.0.0.1:{port}")
        self.addCleanup(channel.close)
        # Listening and NOT_SERVING: Start is past the bind, into the model factory.
        self.assertTrue(wait_for(lambda: e2e.health_status(channel) == 2, 60), log())
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            with open(fifo, "w") as f:  # let the old behaviour carry on, then fail
                with open(os.path.join(source, "config.json")) as real:
                    f.write(real.read())
            rc = proc.wait(60)
            self.fail(f"SIGTERM during loading did not exit promptly (then rc {rc}):\n" + log())
        self.assertEqual(rc, 0, log())
        self.assertNotIn("Loaded", log())
        self.assertIn("before serving", log())


if __name__ == "__main__":
    ARGS, rest = e2e.parse_args_and_load_stubs()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
