"""End-to-end test of the HTTP API with clients nobody here wrote.

Starts the real `embedserve` binary (tiny-bert, free ports), then calls POST /v1/embeddings
through the `openai` SDK (float and base64) and langchain-openai's OpenAIEmbeddings, and
POST /embed and /similarity through huggingface_hub's InferenceClient (feature_extraction,
sentence_similarity); every vector must
be within 1e-6 of gRPC Embed's for the same texts (gRPC read through Debian's python3,
tests/e2e/grpc_embed.py). Then runs the README's curl lines against the server. A second
server runs with mTLS and API keys (certificates made by openssl here): the openai SDK over
HTTPS with and without a key or a client certificate, docs/security.md's curl lines, and
no key in its log or --print-config.

Run by ctest (tests/e2e/CMakeLists.txt) with the virtual environment of
requirements/test.txt:
  .venv/bin/python http_clients_e2e_test.py --binary BUILD/tools/server/embedserve \
      --stubs BUILD/tests/e2e/py --data tests/data --readme README.md
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

ARGS = None
TOLERANCE = 1e-6  # float32 values: the HTTP floats are shortest round-trip, base64 exact

TEXTS = ["hello world", "A second, longer sentence about embeddings.", "", "ünïcödé text"]


class Server:
    """The binary as a child process, on free ports; its log is read on a thread."""

    def __init__(self, binary, model, server_yaml="  metrics_port: -1\n", env=None):
        self.config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        self.config.write("server:\n  port: 0\n  http_port: 0\n" + server_yaml +
                          "model:\n  device: cpu\nlogging:\n  level: info\n")
        self.config.close()
        self.proc = subprocess.Popen([binary, "--config", self.config.name, "--model", model],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        self.lines = []
        self.ready = threading.Event()
        self.grpc_port = self.http_port = self.metrics_port = None
        threading.Thread(target=self._read, daemon=True).start()
        # The line is logged once the model is loaded, warmed up and SERVING.
        if not self.ready.wait(120) or self.http_port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on [^ ]*:(\d+) .*HTTP API on https?://[^ ]*:(\d+)", line)
            if m:
                self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
                metrics = re.search(r"metrics on https?://[^ ]*:(\d+)", line)
                self.metrics_port = int(metrics.group(1)) if metrics else None
                self.ready.set()
        self.ready.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        os.unlink(self.config.name)


def run_doc_curl_lines(test, path, marker, at_least, replacements, cwd=None):
    """Runs the `curl` lines between <!-- MARKER-begin --> and <!-- MARKER-end --> in the
    file at `path`, with `replacements` (old -> new) applied; each must succeed. Returns
    [(line, stdout)]."""
    with open(path) as f:
        doc = f.read()
    section = doc[doc.index(f"<!-- {marker}-begin -->"):doc.index(f"<!-- {marker}-end -->")]
    lines = [l for l in section.splitlines() if l.startswith("curl ")]
    test.assertGreaterEqual(len(lines), at_least)
    outputs = []
    for line in lines:
        cmd = line
        for old, new in replacements.items():
            cmd = cmd.replace(old, new)
        out = subprocess.run(["bash", "-c", cmd + " --fail --show-error --max-time 30"],
                             capture_output=True, text=True, timeout=60, cwd=cwd)
        test.assertEqual(out.returncode, 0, f"{line}\n{out.stderr}")
        outputs.append((line, out.stdout))
    return outputs


def make_certs(folder):
    """docs/security.md's openssl lines: a CA, a server and a client certificate."""
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    script = f"""set -e
openssl req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=my-ca
openssl req {key} -keyout server.key -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
openssl req {key} -keyout client.key -out client.csr -subj /CN=client
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem
"""
    subprocess.run(["sh", "-c", script], cwd=folder, check=True, capture_output=True, timeout=60)


def grpc_vectors(port, texts):
    out = subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "grpc_embed.py"),
                          "--stubs", ARGS.stubs, "--address", f"127.0.0.1:{port}"],
                         input=json.dumps(texts), capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout)


class HttpClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(ARGS.binary, os.path.join(ARGS.data, "tiny-bert"))
        cls.base = f"http://127.0.0.1:{cls.server.http_port}"
        with urllib.request.urlopen(cls.base + "/info", timeout=10) as r:
            cls.info = json.load(r)
        cls.model = cls.info["model_id"]
        cls.reference = grpc_vectors(cls.server.grpc_port, TEXTS)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def assertVectorsClose(self, got, want=None):
        want = want if want is not None else self.reference["vectors"]
        self.assertEqual(len(got), len(want))
        for i, (g, w) in enumerate(zip(got, want)):
            self.assertEqual(len(g), len(w), i)
            worst = max(abs(float(a) - b) for a, b in zip(g, w))
            self.assertLessEqual(worst, TOLERANCE, f"text {i}: max |http - grpc| = {worst}")

    def test_openai_sdk_float_and_base64(self):
        from openai import OpenAI
        client = OpenAI(base_url=self.base + "/v1", api_key="unused")
        for fmt in ("float", "base64"):
            r = client.embeddings.create(model=self.model, input=TEXTS, encoding_format=fmt)
            self.assertEqual([d.index for d in r.data], list(range(len(TEXTS))))
            if fmt == "base64" and isinstance(r.data[0].embedding, str):
                import base64
                import numpy as np
                vectors = [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4").tolist()
                           for d in r.data]
            else:
                vectors = [d.embedding for d in r.data]
            self.assertVectorsClose(vectors)
            self.assertEqual(r.usage.prompt_tokens, self.reference["prompt_tokens"])
            self.assertEqual(r.usage.total_tokens, self.reference["prompt_tokens"])
            self.assertEqual(r.model, self.model)

    def test_openai_sdk_default_format_and_errors(self):
        import openai
        client = openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0)
        r = client.embeddings.create(model=self.model, input=TEXTS[0])  # SDK's default format
        self.assertVectorsClose([r.data[0].embedding], self.reference["vectors"][:1])
        with self.assertRaises(openai.NotFoundError):
            client.embeddings.create(model="no-such-model", input="x")
        with self.assertRaises(openai.BadRequestError) as e:
            client.embeddings.create(model=self.model, input="x", dimensions=7)
        self.assertIn("dimensions", str(e.exception))

    def test_huggingface_hub_feature_extraction(self):
        from huggingface_hub import InferenceClient
        client = InferenceClient(model=self.base + "/embed")
        vectors = [client.feature_extraction(t)[0].tolist() for t in TEXTS]
        self.assertVectorsClose(vectors)

    def test_huggingface_hub_sentence_similarity(self):
        import numpy as np
        from huggingface_hub import InferenceClient
        client = InferenceClient(model=self.base + "/similarity")
        scores = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:])
        ref = [np.asarray(v, dtype=np.float64) for v in self.reference["vectors"]]
        for got, other in zip(scores, ref[1:]):
            want = float(ref[0] @ other / (np.linalg.norm(ref[0]) * np.linalg.norm(other)))
            self.assertAlmostEqual(float(got), want, delta=1e-5)  # float32 cosine vs float64

    def test_langchain_openai_embeddings(self):
        from langchain_openai import OpenAIEmbeddings
        emb = OpenAIEmbeddings(model=self.model, base_url=self.base + "/v1", api_key="unused",
                               check_embedding_ctx_length=False)  # send texts, not tiktoken ids
        self.assertVectorsClose(emb.embed_documents(TEXTS))
        self.assertVectorsClose([emb.embed_query(TEXTS[1])], self.reference["vectors"][1:2])

    def test_readme_curl_lines(self):
        outputs = run_doc_curl_lines(self, ARGS.readme, "http-curl", 5, {
            "127.0.0.1:8080": f"127.0.0.1:{self.server.http_port}",
            "sentence-transformers/all-MiniLM-L6-v2": self.model})
        for line, stdout in outputs:
            if "/metrics" not in line:
                json.loads(stdout)  # every API answer is JSON


class SecureHttpClientsTest(unittest.TestCase):
    """mTLS + API keys (a file and an environment variable) on the real binary."""
    FILE_KEY = "e2e-file-key-4f1c2b"
    ENV_KEY = "e2e-env-key-9d7a31"

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        make_certs(d)
        with open(os.path.join(d, "api_keys.txt"), "w") as f:
            f.write("# e2e\n" + cls.FILE_KEY + "\n")
        cls.server_yaml = (
            "  metrics_port: 0\n"
            f"  tls: {{cert_file: {d}/server.pem, key_file: {d}/server.key, "
            f"client_ca_file: {d}/ca.pem}}\n"
            f"  auth: {{api_keys_file: {d}/api_keys.txt, api_keys_env: E2E_API_KEYS}}\n")
        cls.env = dict(os.environ, E2E_API_KEYS=cls.ENV_KEY)
        cls.server = Server(ARGS.binary, os.path.join(ARGS.data, "tiny-bert"), cls.server_yaml,
                            cls.env)
        cls.base = f"https://127.0.0.1:{cls.server.http_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.dir.cleanup()

    def client(self, api_key, cert=True):
        import ssl
        import httpx
        import openai
        d = self.dir.name
        tls = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        if cert:
            tls.load_cert_chain(os.path.join(d, "client.pem"), os.path.join(d, "client.key"))
        http = httpx.Client(verify=tls)
        return openai.OpenAI(base_url=self.base + "/v1", api_key=api_key, http_client=http,
                             max_retries=0)

    def test_openai_sdk_needs_a_key_and_a_client_certificate(self):
        import openai
        for key in (self.FILE_KEY, self.ENV_KEY):
            r = self.client(key).embeddings.create(model="tiny-bert", input=TEXTS)
            self.assertEqual([d.index for d in r.data], list(range(len(TEXTS))))
        with self.assertRaises(openai.AuthenticationError) as e:
            self.client("not-the-key").embeddings.create(model="tiny-bert", input="x")
        self.assertNotIn("not-the-key", str(e.exception))
        with self.assertRaises(openai.APIConnectionError):
            self.client(self.FILE_KEY, cert=False).embeddings.create(model="tiny-bert", input="x")

    def test_security_doc_curl_lines(self):
        run_doc_curl_lines(self, os.path.join(os.path.dirname(ARGS.readme), "docs", "security.md"),
                           "security-curl", 3, {
                               "127.0.0.1:8080": f"127.0.0.1:{self.server.http_port}",
                               "127.0.0.1:9000": f"127.0.0.1:{self.server.metrics_port}"},
                           cwd=self.dir.name)

    def test_no_key_in_the_log_or_the_printed_config(self):
        # Calls with the right and a wrong key went through the log by now or go now.
        self.client(self.FILE_KEY).embeddings.create(model="tiny-bert", input="x")
        log = "".join(self.server.lines)
        self.assertIn("API keys: 1 from", log)
        self.assertIn("1 from $E2E_API_KEYS", log)
        printed = subprocess.run([ARGS.binary, "--config", self.server.config.name,
                                  "--print-config"], env=self.env, capture_output=True,
                                 text=True, timeout=60, check=True).stdout
        self.assertIn('api_keys_env: "E2E_API_KEYS"', printed)
        for text in (log, printed):
            self.assertNotIn(self.FILE_KEY, text)
            self.assertNotIn(self.ENV_KEY, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--readme", required=True)
    ARGS, rest = parser.parse_known_args()
    try:
        import openai  # noqa: F401
        import huggingface_hub  # noqa: F401
        import langchain_openai  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: {e}; run scripts/setup.sh to make .venv from requirements/test.txt")
        sys.exit(77)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
