#!/usr/bin/env python3
"""Prints one line per median of a Google Benchmark JSON file (scripts/device/fused_ab.sh).

  fused_ab_summary.py embed FILE TAG FUSED   bench/model BM_Embed: ms and sentences/s
  fused_ab_summary.py ops FILE               fused_kernels_bench: GPU us per call
"""
import json
import sys


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    benchmarks = json.load(open(path))["benchmarks"]
    for b in benchmarks:
        if b.get("aggregate_name") != "median":
            continue
        if kind == "embed":
            tag, fused = sys.argv[3], sys.argv[4]
            name = b["run_name"].replace("/real_time", "")
            label = b.get("label", "")
            path = label[label.find("(fused:"):].split(")")[0] + ")" if "(fused:" in label else "ATen ops"
            print(f"{tag:<10} FUSED={fused:<10} {name:<34} {b['real_time']:8.3f} ms "
                  f"{b['sentences/s']:>10,.0f} sent/s [{path}]")
        else:
            name = b["run_name"].split("/iterations")[0].split("/manual_time")[0]
            print(f"{name:<26} {b['us_per_call']:8.2f} us per call")


if __name__ == "__main__":
    main()
