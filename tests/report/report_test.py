#!/usr/bin/python3
"""Tests of scripts/report.py (on the stored result in tests/data/report/) and, when the
binaries are given, of scripts/run_experiment.sh end to end with fake-embedserve.

Env: REPORT_PY, RUN_EXPERIMENT, FIXTURE_DIR, WORK_DIR (scratch), and for the launcher
tests BUILD_DIR, FAKE_SERVER, EXPERIMENTS_DIR (skipped when FAKE_SERVER is unset).
Run by ctest (tests/report/CMakeLists.txt) with Debian's /usr/bin/python3.
"""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import unittest

REPORT_PY = os.environ["REPORT_PY"]
FIXTURE_DIR = os.environ["FIXTURE_DIR"]
WORK_DIR = os.environ["WORK_DIR"]
PY = "/usr/bin/python3"


def run_report(args):
    return subprocess.run([PY, REPORT_PY] + args, capture_output=True, text=True, timeout=120)


def csv_points(run_dir):
    with open(os.path.join(run_dir, "bench.csv")) as f:
        return list(csv.DictReader(f))


def run_dirs(root, name):
    return sorted(glob.glob(os.path.join(root, name, "*")))


def table_row(text, section, first_cell):
    """The cells of the row starting with `first_cell` in the table under `section`."""
    part = text.split("## " + section, 1)[1].split("\n## ", 1)[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError("no row %r under %r" % (first_cell, section))


class ReportFromStoredResultTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = os.path.join(WORK_DIR, "report_fixture")
        shutil.rmtree(cls.out, ignore_errors=True)
        r = run_report([FIXTURE_DIR, "--out", cls.out])
        if r.returncode != 0:
            raise AssertionError("report.py failed: %s %s" % (r.stdout, r.stderr))
        with open(os.path.join(cls.out, "report.md")) as f:
            cls.text = f.read()
        cls.base = csv_points(run_dirs(FIXTURE_DIR, "minilm_baseline")[-1])
        cls.batching = csv_points(run_dirs(FIXTURE_DIR, "minilm_batching")[-1])

    def test_peak_matches_the_raw_csv(self):
        for name, rows in (("minilm_baseline", self.base), ("minilm_batching", self.batching)):
            best = max(rows, key=lambda r: float(r["items_per_s"]))
            cells = table_row(self.text, "Peak throughput", name)
            self.assertAlmostEqual(float(cells[1]), float(best["items_per_s"]), delta=0.05)
            self.assertEqual(cells[3], best["batch_size"])
            self.assertEqual(cells[4], best["concurrency"])

    def test_difference_from_baseline_in_percent(self):
        b = max(float(r["items_per_s"]) for r in self.base)
        x = max(float(r["items_per_s"]) for r in self.batching)
        cells = table_row(self.text, "Peak throughput", "minilm_batching")
        self.assertEqual(cells[7], "%+.1f%%" % (100 * (x - b) / b))
        self.assertEqual(table_row(self.text, "Peak throughput", "minilm_baseline")[7], "baseline")

    def test_single_request_latency_is_batch1_concurrency1(self):
        row = [r for r in self.base if r["batch_size"] == "1" and r["concurrency"] == "1"][0]
        cells = table_row(self.text, "Single-request latency", "minilm_baseline")
        for i, key in enumerate(["lat_avg_ms", "lat_p50_ms", "lat_p95_ms", "lat_p99_ms"], start=1):
            self.assertAlmostEqual(float(cells[i]), float(row[key]), delta=0.006, msg=key)

    def test_scaling_lists_every_batch_at_concurrency1(self):
        cells = table_row(self.text, "Scaling with batch size", "minilm_batching")
        c1 = sorted((int(r["batch_size"]), float(r["items_per_s"]))
                    for r in self.batching if r["concurrency"] == "1")
        for i, (_, v) in enumerate(c1, start=1):
            self.assertAlmostEqual(float(cells[i]), v, delta=0.05)

    def test_time_split_sums_to_latency(self):
        part = self.text.split("## Where the time goes", 1)[1].split("\n## ", 1)[0]
        rows = [l for l in part.splitlines() if l.startswith("| minilm_")]
        self.assertGreaterEqual(len(rows), 4)  # b1 c1 and the peak, per experiment
        for line in rows:
            cells = [c.strip() for c in line.strip("|").split("|")]
            parts = [float(c.split()[0]) for c in cells[2:7]]
            self.assertAlmostEqual(sum(parts), float(cells[7]), delta=0.01, msg=line)
            self.assertIn(cells[8], ("tokenize", "queue", "inference", "other server", "rest"))

    def test_over_grpc_against_in_process(self):
        # The fixture's baseline holds an inprocess.json at batch 4 (25000 pairs/s).
        with open(os.path.join(run_dirs(FIXTURE_DIR, "minilm_baseline")[-1], "inprocess.json")) as f:
            ip = json.load(f)["points"][0]
        b4 = [r for r in self.base if r["batch_size"] == str(ip["batch_size"])]
        best = max(b4, key=lambda r: float(r["items_per_s"]))
        cells = table_row(self.text, "Over gRPC against in process", "minilm_baseline")
        self.assertEqual(cells[1], str(ip["batch_size"]))
        self.assertAlmostEqual(float(cells[2]), ip["items_per_s"], delta=0.05)
        self.assertEqual(cells[3], "%.1f (c%s)" % (float(best["items_per_s"]), best["concurrency"]))
        self.assertEqual(cells[4], "%.1f%%" % (100 * float(best["items_per_s"]) / ip["items_per_s"]))

    def test_plots_are_png_files(self):
        for name in ("throughput_vs_batch", "latency_vs_concurrency", "time_split"):
            path = os.path.join(self.out, "plots", name + ".png")
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", path)
            self.assertGreater(os.path.getsize(path), 5000)
            self.assertIn("(plots/%s.png)" % name, self.text)

    def test_machine_facts_and_commands_are_shown(self):
        cells = table_row(self.text, "Runs and machines", "minilm_baseline")
        with open(os.path.join(run_dirs(FIXTURE_DIR, "minilm_baseline")[-1], "machine.json")) as f:
            machine = json.load(f)
        self.assertEqual(cells[6], machine["cpu_model"])
        self.assertIn("embedserve-bench --config", self.text)


class ReportInputsTest(unittest.TestCase):
    def test_newest_run_of_an_experiment_wins(self):
        root = os.path.join(WORK_DIR, "two_runs")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(FIXTURE_DIR, root)
        src = run_dirs(root, "minilm_baseline")[-1]
        old = os.path.join(root, "minilm_baseline", "19990101T000000Z")
        shutil.copytree(src, old)
        with open(os.path.join(old, "bench.json")) as f:
            data = json.load(f)
        for p in data["points"]:
            p["items_per_s"] = 1.0e9  # an old run must not be picked
        with open(os.path.join(old, "bench.json"), "w") as f:
            json.dump(data, f)
        out = os.path.join(WORK_DIR, "two_runs_out")
        r = run_report([root, "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "report.md")) as f:
            self.assertNotIn("1000000000.0", f.read())

    def test_open_loop_points_get_their_own_table(self):
        root = os.path.join(WORK_DIR, "open_loop")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(FIXTURE_DIR, root)
        path = os.path.join(run_dirs(root, "minilm_batching")[-1], "bench.json")
        with open(path) as f:
            data = json.load(f)
        p = dict(data["points"][0])
        p.update({"rate_rps": 50.0, "mode": "open", "concurrency": 1024, "items_per_s": 49.5,
                  "not_sent": 3, "latency_ms": dict(p["latency_ms"], p99=12.5)})
        data["points"].append(p)
        with open(path, "w") as f:
            json.dump(data, f)
        out = os.path.join(WORK_DIR, "open_loop_out")
        r = run_report([root, "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "report.md")) as f:
            text = f.read()
        cells = table_row(text, "Open loop", "minilm_batching")
        self.assertEqual(cells[2:4], ["50.0", "49.5"])
        self.assertEqual(cells[6], "12.50")
        self.assertEqual(cells[9], "3")
        # An open-loop point is not a closed-loop peak.
        self.assertNotEqual(table_row(text, "Peak throughput", "minilm_batching")[4], "1024")

    def test_split_request_queue_overlap_still_adds_up(self):
        # A request split over several batches reports queue_us overlapping inference_us.
        root = os.path.join(WORK_DIR, "overlap")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(FIXTURE_DIR, root)
        path = os.path.join(run_dirs(root, "minilm_batching")[-1], "bench.json")
        with open(path) as f:
            data = json.load(f)
        for p in data["points"]:
            p["latency_ms"]["avg"] = 10.0
            p["server_us"].update({"tokenize": 500.0, "queue": 8000.0, "inference": 7000.0,
                                   "total": 9000.0, "rest": 1000.0})
        with open(path, "w") as f:
            json.dump(data, f)
        out = os.path.join(WORK_DIR, "overlap_out")
        r = run_report([root, "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "report.md")) as f:
            cells = table_row(f.read(), "Where the time goes", "minilm_batching")
        parts = [float(c.split()[0]) for c in cells[2:7]]
        self.assertEqual(parts, [0.5, 1.5, 7.0, 0.0, 1.0])  # queue = 9 - 0.5 - 7
        self.assertAlmostEqual(sum(parts), 10.0)

    def test_explicit_baseline_and_unknown_baseline(self):
        out = os.path.join(WORK_DIR, "baseline_out")
        r = run_report([FIXTURE_DIR, "--out", out, "--baseline", "minilm_batching"])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "report.md")) as f:
            text = f.read()
        self.assertEqual(table_row(text, "Peak throughput", "minilm_batching")[7], "baseline")
        r = run_report([FIXTURE_DIR, "--out", out, "--baseline", "nope"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--baseline nope is not among the experiments", r.stderr)

    def test_bad_folders_fail_with_a_message(self):
        r = run_report(["/nonexistent/results", "--out", os.path.join(WORK_DIR, "x")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent/results: not a directory", r.stderr)
        empty = os.path.join(WORK_DIR, "empty_results")
        os.makedirs(empty, exist_ok=True)
        r = run_report([empty, "--out", os.path.join(WORK_DIR, "x")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("no bench.json below it", r.stderr)
        broken = os.path.join(WORK_DIR, "broken_run")
        os.makedirs(broken, exist_ok=True)
        with open(os.path.join(broken, "bench.json"), "w") as f:
            f.write("{not json")
        r = run_report([broken, "--out", os.path.join(WORK_DIR, "x")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("bench.json: not valid JSON", r.stderr)
        with open(os.path.join(broken, "bench.json"), "w") as f:
            json.dump({"run": {}, "points": [{"batch_size": 1}]}, f)
        r = run_report([broken, "--out", os.path.join(WORK_DIR, "x")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("point 0 is missing or has a bad field", r.stderr)


@unittest.skipUnless(os.environ.get("FAKE_SERVER"), "launcher test needs FAKE_SERVER")
class RunExperimentTest(unittest.TestCase):
    def launch(self, results, experiments, *extra, env_extra=None):
        env = dict(os.environ)
        env["EMBEDSERVE_BIN"] = os.environ["FAKE_SERVER"]
        env.update(env_extra or {})
        exps = [os.path.join(os.environ["EXPERIMENTS_DIR"], e + ".yaml") for e in experiments]
        return subprocess.run(
            [os.environ["RUN_EXPERIMENT"], "--build-dir", os.environ["BUILD_DIR"],
             "--results-dir", results] + list(extra) + exps,
            capture_output=True, text=True, timeout=300, env=env)

    def test_sweeps_stores_everything_and_reports(self):
        results = os.path.join(WORK_DIR, "launch_ok")
        shutil.rmtree(results, ignore_errors=True)
        r = self.launch(results, ["minilm_baseline", "minilm_batching"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name in ("minilm_baseline", "minilm_batching"):
            dirs = run_dirs(results, name)
            self.assertEqual(len(dirs), 1)
            d = dirs[0]
            for f in ("config.yaml", "effective_config.yaml", "server.log", "bench.csv",
                      "bench.json", "bench.log", "machine.json", "run.json"):
                self.assertTrue(os.path.exists(os.path.join(d, f)), f)
            rows = csv_points(d)
            self.assertEqual(len(rows), 4)  # 2 batch sizes x 2 concurrencies
            for row in rows:
                self.assertGreater(int(row["requests_ok"]), 0)
                self.assertEqual(int(row["items_ok"]),
                                 int(row["requests_ok"]) * int(row["batch_size"]))
            with open(os.path.join(d, "machine.json")) as f:
                machine = json.load(f)
            for k in ("cpu_model", "cores_available", "gpu", "libtorch", "precision", "device"):
                self.assertIn(k, machine)
            with open(os.path.join(d, "run.json")) as f:
                run = json.load(f)
            self.assertEqual(run["failures"], [])
            self.assertEqual(run["server_exit"], "0")  # clean stop on SIGTERM
        # One progress line per sweep point.
        self.assertEqual(sum(1 for l in r.stdout.splitlines() if "/4 similarity batch=" in l), 8)
        out = os.path.join(WORK_DIR, "launch_ok_report")
        rep = run_report([results, "--out", out])
        self.assertEqual(rep.returncode, 0, rep.stderr)

    def test_a_crashing_server_is_reported(self):
        results = os.path.join(WORK_DIR, "launch_crash")
        shutil.rmtree(results, ignore_errors=True)
        r = self.launch(results, ["minilm_baseline"], "--server-args", "--fail-after 20")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("minilm_baseline FAILED", r.stderr)
        self.assertIn("simulated crash", r.stderr)  # the server log's tail is shown
        with open(os.path.join(run_dirs(results, "minilm_baseline")[0], "run.json")) as f:
            run = json.load(f)
        self.assertTrue(any("server exited by itself with status 3" in f for f in run["failures"]),
                        run["failures"])

    def test_a_server_that_never_serves_is_reported(self):
        results = os.path.join(WORK_DIR, "launch_notready")
        shutil.rmtree(results, ignore_errors=True)
        r = self.launch(results, ["minilm_baseline"], "--server-args", "--no-ready",
                        "--ready-timeout", "2")
        self.assertNotEqual(r.returncode, 0)
        with open(os.path.join(run_dirs(results, "minilm_baseline")[0], "run.json")) as f:
            run = json.load(f)
        self.assertTrue(any("never became SERVING" in f for f in run["failures"]), run["failures"])

    @unittest.skipUnless(os.environ.get("EMBEDSERVE_INPROCESS_BIN"), "needs the LibTorch build")
    def test_inprocess_reference_runs_after_the_sweep(self):
        results = os.path.join(WORK_DIR, "launch_inprocess")
        shutil.rmtree(results, ignore_errors=True)
        r = self.launch(results, ["minilm_baseline"], "--inprocess", "1,4",
                        "--server-args", "--model " + os.environ["TINY_BERT_DIR"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        d = run_dirs(results, "minilm_baseline")[0]
        with open(os.path.join(d, "inprocess.json")) as f:
            ip = json.load(f)
        self.assertEqual(ip["run"]["mode"], "inprocess")
        self.assertEqual(ip["run"]["model.path"], os.environ["TINY_BERT_DIR"])
        self.assertEqual([p["batch_size"] for p in ip["points"]], [1, 4])
        for p in ip["points"]:
            self.assertGreater(p["requests_ok"], 0)
            self.assertEqual(p["items_ok"], p["requests_ok"] * p["batch_size"])
            # Same generator and seed as the sweep: the same sentence lengths.
            self.assertGreater(p["tokens_per_item"], 2 * 5)
        with open(os.path.join(d, "run.json")) as f:
            self.assertIn("--model " + os.environ["TINY_BERT_DIR"], json.load(f)["inprocess_command"])
        out = os.path.join(WORK_DIR, "launch_inprocess_report")
        rep = run_report([results, "--out", out])
        self.assertEqual(rep.returncode, 0, rep.stderr)
        with open(os.path.join(out, "report.md")) as f:
            text = f.read()
        self.assertEqual(table_row(text, "Over gRPC against in process", "minilm_baseline")[1], "1")

    def test_missing_experiment_file_is_reported(self):
        results = os.path.join(WORK_DIR, "launch_missing")
        r = self.launch(results, ["does_not_exist"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no such file", r.stderr)


if __name__ == "__main__":
    os.makedirs(WORK_DIR, exist_ok=True)
    unittest.main(verbosity=2)
