#!/usr/bin/python3
"""Replicas of the real `embedserve` binary behind a real load balancer, under load.

ReplicasBehindNginxTest: three replicas behind nginx (scripts/cluster/), gRPC and HTTP
calls through nginx from four client threads. SIGTERM to one replica: no call fails
(server.shutdown_delay_ms keeps it serving, NOT_SERVING, while the cluster's health
watcher takes it out of nginx). SIGKILL to another: the calls it had in flight fail, in
one short burst; the survivor serves every call after; restarted on its ports, the
killed replica gets calls again.

ClientSideBalancingTest: two replicas, no proxy: grpcio's round_robin over both addresses
reaches both; one killed, every call still succeeds (on the other); a replica that starts
draining (SIGTERM, health NOT_SERVING) gets no new calls.

Every wait is bounded in time and every loop in count; everything listens on 127.0.0.1.
Run by ctest (tests/deploy/CMakeLists.txt):
  /usr/bin/python3 replicas_test.py --binary BUILD/tools/server/embedserve \
      --stubs BUILD/tests/e2e/py --data tests/data --cluster scripts/cluster
"""
import json
import os
import signal
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

ARGS = None
DRAIN_DELAY_MS = 2000  # server.shutdown_delay_ms of every replica here


def replica_config():
    """A small config for replicas on a shared 2-core machine: one model thread each."""
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write("server:\n"
            f"  shutdown_delay_ms: {DRAIN_DELAY_MS}\n"
            "  shutdown_grace_ms: 10000\n"
            "model:\n  device: cpu\n  threads: 1\n"
            "batching:\n  timeout_ms: 1\n"
            "logging:\n  level: info\n")
    f.close()
    return f.name


class Call:
    __slots__ = ("kind", "start", "end", "error")

    def __init__(self, kind, start, end, error):
        self.kind, self.start, self.end, self.error = kind, start, end, error


class Load:
    """Client threads that call through one address until stopped: gRPC Embed on one
    shared channel and HTTP POST /embed, each call recorded with its times and error.
    Each thread makes at most `max_calls` calls and stops after `max_s` seconds."""

    def __init__(self, grpc_target, http_url, grpc_threads=2, http_threads=2,
                 max_calls=20000, max_s=150, channel_options=()):
        self.channel = grpc.insecure_channel(grpc_target, options=list(channel_options))
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)
        self.http_url = http_url
        self.max_calls = max_calls
        self.deadline = time.monotonic() + max_s
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.calls = []
        self.threads = [threading.Thread(target=self._run, args=(self._grpc_call,))
                        for _ in range(grpc_threads)]
        self.threads += [threading.Thread(target=self._run, args=(self._http_call,))
                         for _ in range(http_threads)]

    def _grpc_call(self, i):
        try:
            r = self.stub.Embed(pb.EmbedRequest(texts=[f"text {i}", "another text"]),
                                timeout=10)
            return None if len(r.embeddings) == 2 else f"{len(r.embeddings)} embeddings"
        except grpc.RpcError as e:
            return f"gRPC {e.code().name}: {e.details()}"

    def _http_call(self, i):
        body = json.dumps({"inputs": [f"text {i}", "another text"]}).encode()
        req = urllib.request.Request(self.http_url + "/embed", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                n = len(json.load(r))
            return None if n == 2 else f"{n} embeddings"
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}: {e.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as e:
            return f"HTTP {e}"

    def _run(self, call):
        for i in range(self.max_calls):
            if self.stop_event.is_set() or time.monotonic() > self.deadline:
                return
            start = time.monotonic()
            error = call(i)
            with self.lock:
                self.calls.append(Call(call.__name__, start, time.monotonic(), error))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        self.channel.close()

    def snapshot(self):
        with self.lock:
            return list(self.calls)

    def wait_calls_after(self, t, count, timeout_s=30):
        """Waits until `count` calls that started after monotonic time t have ended."""
        cluster.wait_until(lambda: sum(c.start > t for c in self.snapshot()) >= count,
                           timeout_s, f"{count} calls ended")


def failures(calls):
    return [c for c in calls if c.error is not None]


def describe(calls, t0):
    return "\n".join(f"  {c.kind} {c.start - t0:+.3f}..{c.end - t0:+.3f} s: {c.error}"
                     for c in calls[:20]) or "  (none)"


class ReplicasBehindNginxTest(unittest.TestCase):
    def test_sigterm_loses_nothing_sigkill_one_burst_then_rejoin(self):
        config = replica_config()
        try:
            with cluster.Cluster(ARGS.binary, 3, config=config,
                                 model=os.path.join(ARGS.data, "tiny-bert"),
                                 max_fails=1, fail_timeout_s=2) as c:
                self._scenario(c)
        finally:
            os.unlink(config)

    def test_large_requests_and_replies_pass_through(self):
        # Requests over 1 MB (nginx's default client_max_body_size, 413 above it) through
        # both proxies: 128 texts of ~10 KB, truncated by the server to 256 tokens each, so
        # within batching.max_request_tokens (32,768).
        texts = [f"text {i} " + "several words in a long text " * 340 for i in range(128)]
        with cluster.Cluster(ARGS.binary, 1, model=os.path.join(ARGS.data, "tiny-bert")) as c:
            body = json.dumps({"inputs": texts}).encode()
            self.assertGreater(len(body), 1024 * 1024)
            req = urllib.request.Request(f"http://127.0.0.1:{c.nginx.http_port}/embed",
                                         data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                reply = r.read()
            self.assertEqual(len(json.loads(reply)), len(texts))
            channel = grpc.insecure_channel(f"127.0.0.1:{c.nginx.grpc_port}")
            reply = pb_grpc.EmbeddingServiceStub(channel).Embed(
                pb.EmbedRequest(texts=texts), timeout=60)
            channel.close()
            self.assertEqual(len(reply.embeddings), len(texts))

    def _scenario(self, c):
        drained, killed, survivor = c.replicas
        load = Load(f"127.0.0.1:{c.nginx.grpc_port}",
                    f"http://127.0.0.1:{c.nginx.http_port}").start()
        try:
            t0 = time.monotonic()
            # Every replica serves through nginx.
            cluster.wait_until(lambda: all((r.embeds() or 0) > 0 for r in c.replicas), 30,
                     "every replica answered a call through nginx")
            self.assertEqual(failures(load.snapshot()), [],
                             describe(failures(load.snapshot()), t0))

            # SIGTERM: the replica answers NOT_SERVING and serves on for shutdown_delay_ms;
            # the cluster's health watcher marks it down in nginx meanwhile, so nginx has
            # stopped sending it calls before it stops accepting them. No call fails.
            t_term = time.monotonic()
            drained.signal(signal.SIGTERM)
            cluster.wait_until(lambda: drained.index in c.nginx.down, DRAIN_DELAY_MS / 1000,
                     "the draining replica marked down in nginx")
            self.assertTrue(drained.alive(), "marked down only after it exited")
            self.assertEqual(drained.wait_exit(60), 0, drained.log())
            load.wait_calls_after(time.monotonic(), 50)
            calls = load.snapshot()
            self.assertGreater(sum(c.start > t_term for c in calls), 50)
            self.assertEqual(failures(calls), [],
                             "after SIGTERM:\n" + describe(failures(calls), t_term) +
                             "\nnginx:\n" + c.nginx.error_log()[-3000:])

            # SIGKILL: the calls on the killed replica fail, in one short burst. nginx
            # cannot retry a gRPC call once it has sent the request (it does not buffer
            # gRPC bodies), so calls in flight there, and calls sent on its dead keepalive
            # connections in the milliseconds before nginx sees them closed, reach the
            # client as UNAVAILABLE (502); later calls go to the survivor.
            served_before = survivor.embeds()
            t_kill = time.monotonic()
            killed.signal(signal.SIGKILL)
            killed.wait_exit(10)
            burst_end = t_kill + 1.0
            load.wait_calls_after(burst_end, 100)
            calls = [x for x in load.snapshot() if x.end > t_kill]
            failed = failures(calls)
            self.assertLessEqual(len(failed), 20, describe(failed, t_kill))
            for f in failed:
                self.assertLess(f.end, burst_end, describe(failed, t_kill))
            after = [x for x in calls if x.start > burst_end]
            self.assertGreaterEqual(len(after), 100)
            self.assertEqual(failures(after), [], describe(failures(after), t_kill) +
                             "\nnginx:\n" + c.nginx.error_log()[-3000:])
            # The survivor served them (no other replica is left).
            self.assertGreaterEqual(survivor.embeds() - served_before, len(after))

            # Restarted on its ports, the killed replica gets calls again once nginx's
            # fail_timeout (2 s) has passed.
            t_restart = time.monotonic()
            killed.start()
            killed.wait_serving(60)
            cluster.wait_until(lambda: (killed.embeds() or 0) > 0, 30,
                     "the restarted replica answered a call through nginx")
            load.wait_calls_after(time.monotonic(), 20)
            late = [x for x in load.snapshot() if x.start > burst_end]
            self.assertEqual(failures(late), [], describe(failures(late), t_kill) +
                             "\nnginx:\n" + c.nginx.error_log()[-3000:])
            all_calls = load.snapshot()
            print(f"\n  nginx: {len(all_calls)} calls in {time.monotonic() - t0:.1f} s, "
                  f"{len(failed)} failed at SIGKILL, 0 at SIGTERM; rejoined "
                  f"{time.monotonic() - t_restart:.1f} s after restart", file=sys.stderr)
        finally:
            load.stop()


class ClientSideBalancingTest(unittest.TestCase):
    # round_robin over the listed addresses; a call that fails with UNAVAILABLE (a replica
    # gone between the pick and the call) is retried on another one; health checking
    # takes a NOT_SERVING replica out of the rotation; quick reconnects to a restarted one.
    SERVICE_CONFIG = json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": "embedserve.v1.EmbeddingService"},
        "methodConfig": [{
            "name": [{"service": "embedserve.v1.EmbeddingService"}],
            "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s",
                            "maxBackoff": "0.5s", "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE"]},
        }],
    })
    OPTIONS = [("grpc.lb_policy_name", "round_robin"),
               ("grpc.service_config", SERVICE_CONFIG),
               ("grpc.enable_retries", 1),
               ("grpc.initial_reconnect_backoff_ms", 100),
               ("grpc.max_reconnect_backoff_ms", 1000)]

    def setUp(self):
        self.config = replica_config()
        self.workdir = tempfile.mkdtemp(prefix="embedserve-rr-")
        self.replicas = [cluster.Replica(i, ARGS.binary, self.config,
                                         os.path.join(ARGS.data, "tiny-bert"), self.workdir)
                         for i in range(2)]
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            r.wait_serving(60)
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in self.replicas)
        self.channel = grpc.insecure_channel(target, options=self.OPTIONS)
        self.stub = pb_grpc.EmbeddingServiceStub(self.channel)
        grpc.channel_ready_future(self.channel).result(timeout=30)

    def tearDown(self):
        self.channel.close()
        for r in self.replicas:
            r.stop()
        os.unlink(self.config)
        for name in os.listdir(self.workdir):
            os.unlink(os.path.join(self.workdir, name))
        os.rmdir(self.workdir)

    def reach_both(self):
        """Calls until both replicas have answered one: the two subchannels connect in
        the background, and the picks alternate once both are READY. At most 500 calls."""
        a, b = self.replicas
        for _ in range(50):
            self.embed(10)
            if a.embeds() > 0 and b.embeds() > 0:
                return
        self.fail(f"calls reached only one replica: {a.embeds()}, {b.embeds()}")

    def embed(self, n):
        for i in range(n):
            r = self.stub.Embed(pb.EmbedRequest(texts=[f"text {i}"]), timeout=10)
            self.assertEqual(len(r.embeddings), 1)

    def test_round_robin_reaches_both_and_survives_a_kill(self):
        a, b = self.replicas
        self.reach_both()
        before = b.embeds()
        self.embed(20)
        self.assertGreaterEqual(b.embeds() - before, 5)  # round_robin: about 10 of 20

        a.signal(signal.SIGKILL)
        a.wait_exit(10)
        before = b.embeds()
        self.embed(40)  # raises on any failed call
        self.assertEqual(b.embeds() - before, 40)

        # Restarted on its port, it gets calls again (reconnect backoff <= 1 s).
        a.start()
        a.wait_serving(60)
        for _ in range(100):
            self.embed(5)
            if a.embeds() > 0:
                break
        self.assertGreater(a.embeds(), 0)

    def test_a_draining_replica_gets_no_new_calls(self):
        a, b = self.replicas
        self.reach_both()
        t_term = time.monotonic()
        a.signal(signal.SIGTERM)
        # health Watch tells the client NOT_SERVING within milliseconds; from then on
        # every call goes to b while a still serves (DRAIN_DELAY_MS).
        quiet_rounds = 0
        for _ in range(200):
            seen = a.embeds()
            self.embed(10)
            if seen is not None and a.embeds() == seen:
                quiet_rounds += 1
                if quiet_rounds == 3:
                    break
            else:
                quiet_rounds = 0
        self.assertEqual(quiet_rounds, 3, "calls kept reaching the draining replica")
        self.assertTrue(a.alive(), "calls stopped reaching it only once it had exited")
        self.assertLess(time.monotonic() - t_term, DRAIN_DELAY_MS / 1000)
        self.assertEqual(a.wait_exit(60), 0)
        self.embed(20)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
    import replica_harness
    ARGS, argv, grpc, cluster, pb, pb_grpc = replica_harness.setup(need_nginx=True)
    unittest.main(argv=argv, verbosity=2)
