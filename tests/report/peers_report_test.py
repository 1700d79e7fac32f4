#!/usr/bin/python3
"""Tests of bench/peers/report.py on a stored bench/peers/run.sh folder
(tests/data/peers_report/: the fp32 systems, the GEMM-share rounds, the served points and
the alternated summaries of the run of 96c1cf9, 2026-12-04). The report must compute
each round's GEMM share from the raw readings, carry the alternated tables over and draw
its three plots.

Env: PEERS_REPORT_PY, FIXTURE_DIR, WORK_DIR (scratch). Run by ctest
(tests/report/CMakeLists.txt) with Debian's /usr/bin/python3 (python3-matplotlib).
"""

import json
import os
import re
import shutil
import subprocess
import unittest

REPORT_PY = os.environ["PEERS_REPORT_PY"]
FIXTURE_DIR = os.environ["FIXTURE_DIR"]
WORK_DIR = os.environ["WORK_DIR"]
FLOP_PER_TOKEN = 2 * 12 * 384 * 384 * 6  # all-MiniLM-L6-v2's linear layers


def gflops(path):
    b = [b for b in json.load(open(path))["benchmarks"] if b.get("run_type") != "aggregate"][0]
    return b["GF/s"] / 1e9 if b["GF/s"] > 1e6 else b["GF/s"]


class PeersReportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = os.path.join(WORK_DIR, "peers_report")
        shutil.rmtree(cls.out, ignore_errors=True)
        os.makedirs(WORK_DIR, exist_ok=True)
        cls.result = subprocess.run(["/usr/bin/python3", REPORT_PY, FIXTURE_DIR, "--out", cls.out],
                                    capture_output=True, text=True, timeout=120)
        path = os.path.join(cls.out, "README.md")
        cls.readme = open(path).read() if os.path.exists(path) else ""

    def test_runs(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        self.assertIn("## Machine", self.readme)

    def test_gemm_share_rows_are_computed_from_the_readings(self):
        for rnd in ("A", "B", "A2"):
            folder = os.path.join(FIXTURE_DIR, "gemm_share")
            before = gflops(os.path.join(folder, f"ceiling_before_{rnd}.json"))
            after = gflops(os.path.join(folder, f"ceiling_after_{rnd}.json"))
            p = json.load(open(os.path.join(folder, f"embedserve_fp32_{rnd}", "inprocess.json")))["points"][0]
            share = p["items_per_s"] * p["tokens_per_item"] * FLOP_PER_TOKEN / 1e9 / max(before, after)
            row = re.search(rf"^\| {rnd} \| .*\| ([0-9.]+)% \|$", self.readme, re.M)
            self.assertIsNotNone(row, f"no GEMM-share row for round {rnd}")
            self.assertAlmostEqual(float(row.group(1)), 100 * share, delta=0.051)

    def test_alternated_summaries_are_carried_over(self):
        for name, heading in (("served_share", "Served against in process, alternating rounds"),
                              ("batch1", "Served batch 1 against ONNX Runtime in process")):
            self.assertIn("## " + heading, self.readme)
            rows = [l.rstrip("\n") for l in open(os.path.join(FIXTURE_DIR, name, "summary.txt"))
                    if l.startswith("|")]
            self.assertTrue(rows)
            section = self.readme.split("## " + heading, 1)[1].split("\n## ", 1)[0]
            for row in rows:
                self.assertIn(row, section)

    def test_plots_are_drawn_and_shown(self):
        for name in ("inprocess.png", "gemm_share.png", "served.png"):
            path = os.path.join(self.out, name)
            self.assertTrue(os.path.exists(path), name)
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)
            self.assertGreater(os.path.getsize(path), 5000, name)
            self.assertIn(f"]({name})", self.readme)


if __name__ == "__main__":
    unittest.main()
