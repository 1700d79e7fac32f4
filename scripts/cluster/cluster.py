#!/usr/bin/python3
"""Local replicas of embedserve behind nginx, on loopback.

Starts N `embedserve` processes (each on free ports of 127.0.0.1: gRPC, HTTP, metrics)
and nginx in front of them: `grpc_pass` for gRPC and `proxy_pass` for the HTTP API, with
retries on the next replica (nginx.conf.in beside this file), and a health watcher that
marks `down` in nginx the replicas not SERVING (draining, killed) (docs/deploy.md). Used by tests/deploy/replicas_test.py and from the command line:

  scripts/cluster/cluster.py --replicas 3 --grpc-port 50050 --http-port 8090 \
      [--config experiments/minilm_batching.yaml] [--model models/all-MiniLM-L6-v2]

prints the addresses and runs until Ctrl-C (or SIGTERM), then stops nginx and sends each
replica SIGTERM. Standard library only (Debian's python3); nginx from Debian
(scripts/setup.sh installs it).
"""
import argparse
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
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"


def free_port():
    """A port nothing listens on now (another process may take it before it is used)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s, what):
    """Polls `condition` every 20 ms until it returns true; raises after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


def http_get(url, timeout_s=2):
    """(status, body) of a GET, or (None, error text) when no answer came."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


class Replica:
    """One `embedserve` process. Its ports are chosen by the server on the first start
    (port 0, read back from its log) and kept on restarts, so nginx finds it again."""

    def __init__(self, index, binary, config, model, workdir):
        self.index = index
        self.binary = binary
        self.config = config
        self.model = model
        self.log_path = os.path.join(workdir, f"replica{index}.log")
        self.proc = None
        self.port = self.http_port = self.metrics_port = 0
        self._lines = []

    def start(self, timeout_s=120):
        args = [self.binary, "--host", HOST, "--port", str(self.port),
                "--http-port", str(self.http_port), "--metrics-port", str(self.metrics_port)]
        if self.config:
            args += ["--config", self.config]
        if self.model:
            args += ["--model", self.model]
        self._lines = []
        listening = threading.Event()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        threading.Thread(target=self._read, args=(self.proc, listening), daemon=True).start()
        # Set by the "listening on" log line (info level), or when the log ends (exit).
        if not listening.wait(timeout_s) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"replica {self.index} did not start (it logs its ports at "
                               f"logging.level info):\n{self.log()}")

    def _read(self, proc, listening):
        with open(self.log_path, "a") as log:
            for line in proc.stdout:
                self._lines.append(line)
                log.write(line)
                log.flush()
                m = re.search(r"listening on [^ ]*:(\d+) .*metrics on http://[^ ]*:(\d+)/"
                              r".*HTTP API on http://[^ ]*:(\d+) ", line)
                if m:
                    self.port, self.metrics_port, self.http_port = map(int, m.groups())
                    listening.set()
        proc.stdout.close()
        listening.set()

    def log(self):
        return "".join(self._lines)

    def serving(self):
        """True while the replica's HTTP /health answers 200 (the model is loaded and the
        replica is not draining); gRPC health says the same (both from one switch)."""
        return http_get(f"http://{HOST}:{self.http_port}/health", 1)[0] == 200

    def wait_serving(self, timeout_s=120):
        wait_until(self.serving, timeout_s, f"replica {self.index} SERVING")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s=60):
        return self.proc.wait(timeout_s)

    def stop(self, timeout_s=30):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def embeds(self):
        """Embed calls this replica answered OK since it (re)started, gRPC and HTTP
        (/embed, /v1/embeddings) together, from its /metrics; None when it does not answer."""
        status, page = http_get(f"http://{HOST}:{self.metrics_port}/metrics")
        if status != 200:
            return None
        total = 0.0
        for name, labels, value in re.findall(r"^(\w+)\{([^}]*)\} (\S+)$", page, re.M):
            label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if ((name == "embedserve_requests_total" and label.get("method") == "Embed" and
                 label.get("code") == "OK") or
                    (name == "embedserve_http_requests_total" and
                     label.get("route") in ("/embed", "/v1/embeddings") and
                     label.get("status") == "200")):
                total += float(value)
        return int(total)


class Nginx:
    """nginx (`daemon off`, its files in `workdir`) in front of the replicas."""

    def __init__(self, replicas, workdir, grpc_port=0, http_port=0, max_fails=1,
                 fail_timeout_s=2, nginx="nginx"):
        self.replicas = replicas
        self.workdir = workdir
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.max_fails = max_fails
        self.fail_timeout_s = fail_timeout_s
        self.nginx = nginx
        self.proc = None
        self.down = frozenset()  # indices of the replicas marked `down` in the config
        self.reloads = 0

    def _config(self):
        with open(os.path.join(HERE, "nginx.conf.in")) as f:
            text = f.read()

        def servers(port_of):
            return "\n".join(f"    server {HOST}:{port_of(r)} max_fails={self.max_fails} "
                             f"fail_timeout={self.fail_timeout_s}s"
                             f"{' down' if r.index in self.down else ''};"
                             for r in self.replicas)

        fields = {"DIR": self.workdir, "HOST": HOST, "GRPC_PORT": str(self.grpc_port),
                  "HTTP_PORT": str(self.http_port),
                  "GRPC_SERVERS": servers(lambda r: r.port),
                  "HTTP_SERVERS": servers(lambda r: r.http_port),
                  "TRIES": str(len(self.replicas))}
        for key, value in fields.items():
            text = text.replace(f"@{key}@", value)
        assert not re.search(r"@[A-Z_]+@", text), text
        return text

    def start(self, timeout_s=20):
        """Starts nginx; free ports are picked for the ports left at 0 (again, up to three
        times, when another process took one first)."""
        pick = self.grpc_port == 0
        for attempt in range(3):
            if pick:
                self.grpc_port, self.http_port = free_port(), free_port()
            path = os.path.join(self.workdir, "nginx.conf")
            with open(path, "w") as f:
                f.write(self._config())
            self.proc = subprocess.Popen([self.nginx, "-p", self.workdir, "-c", path],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
            try:
                wait_until(lambda: self.proc.poll() is not None or self._listening(),
                           timeout_s, "nginx listening")
            except TimeoutError:
                self.stop()
                raise
            if self.proc.poll() is None:
                return
            err = self.proc.stderr.read()
            if not pick or "Address already in use" not in err or attempt == 2:
                raise RuntimeError(f"nginx did not start: {err}")

    def set_down(self, down):
        """Rewrites the config with the replicas of `down` (indices) marked `down` and
        reloads nginx (SIGHUP): new workers stop sending them anything at once, old
        workers finish the requests they hold and exit."""
        self.down = frozenset(down)
        with open(os.path.join(self.workdir, "nginx.conf"), "w") as f:
            f.write(self._config())
        self.proc.send_signal(signal.SIGHUP)
        self.reloads += 1

    def _listening(self):
        for port in (self.grpc_port, self.http_port):
            try:
                socket.create_connection((HOST, port), timeout=1).close()
            except OSError:
                return False
        return True

    def error_log(self):
        try:
            with open(os.path.join(self.workdir, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout_s=10):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in progress
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


class HealthWatcher:
    """The active health check nginx OSS lacks: polls every replica's /health (200 only
    while SERVING) every `period_s` on a thread, and when the set of replicas that are not
    serving changes, marks them `down` in nginx and reloads it. A replica draining after
    SIGTERM answers 503 for server.shutdown_delay_ms while it still serves, so nginx stops
    sending it calls before it stops accepting them; a killed replica is refused, a
    restarted one comes back as soon as it is SERVING."""

    def __init__(self, replicas, nginx, period_s=0.1):
        self.replicas = replicas
        self.nginx = nginx
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self):
        while not self._stop.wait(self.period_s):
            down = {r.index for r in self.replicas if not r.serving()}
            if down != self.nginx.down:
                self.nginx.set_down(down)


class Cluster:
    """N replicas, nginx and the HealthWatcher; a context manager that stops everything
    on exit."""

    def __init__(self, binary, replicas, config=None, model=None, workdir=None,
                 health_period_s=0.1, **nginx_args):
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="embedserve-cluster-")
        # nginx started as root runs its workers as nobody: they must reach the temp
        # folders (request bodies and responses larger than the buffers) in here.
        os.chmod(self.workdir, 0o755)
        self.replicas = [Replica(i, binary, config, model, self.workdir)
                         for i in range(replicas)]
        self.nginx = Nginx(self.replicas, self.workdir, **nginx_args)
        self.watcher = HealthWatcher(self.replicas, self.nginx, health_period_s)

    def __enter__(self):
        try:
            for r in self.replicas:
                r.start()
            for r in self.replicas:
                r.wait_serving()
            self.nginx.start()
            self.watcher.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.watcher.stop()
        self.nginx.stop()
        for r in self.replicas:
            r.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main():
    root = os.path.dirname(os.path.dirname(HERE))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--binary", default=os.path.join(root, "build/tools/server/embedserve"))
    p.add_argument("--config", help="experiment YAML for every replica (its ports are "
                   "replaced by free ones)")
    p.add_argument("--model", help="model folder (default: as the config says)")
    p.add_argument("--grpc-port", type=int, default=50050, help="nginx's gRPC port")
    p.add_argument("--http-port", type=int, default=8090, help="nginx's HTTP port")
    p.add_argument("--workdir", help="logs and nginx files (default: a temporary folder, "
                   "removed at exit)")
    a = p.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    with Cluster(a.binary, a.replicas, a.config, a.model,
                 os.path.abspath(a.workdir) if a.workdir else None,
                 grpc_port=a.grpc_port, http_port=a.http_port) as c:
        for r in c.replicas:
            print(f"replica {r.index}: pid {r.proc.pid}, gRPC {HOST}:{r.port}, HTTP "
                  f"{HOST}:{r.http_port}, metrics {HOST}:{r.metrics_port}, log {r.log_path}")
        print(f"nginx: gRPC {HOST}:{c.nginx.grpc_port}, HTTP http://{HOST}:{c.nginx.http_port}"
              f" (config and error.log in {c.workdir}); Ctrl-C stops everything", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
