#!/usr/bin/python3
"""Markdown tables of bench/hostile/acceptance.py's JSON Lines against issue 12's targets.

  /usr/bin/python3 bench/hostile/report.py RESULTS.jsonl [--label TEXT] >> REPORT.md
"""
import argparse
import json


def fmt(x, unit=""):
    return "-" if x is None else f"{x}{unit}"


def verdict(ok):
    return "met" if ok else "missed"


def overload(r):
    o, l80 = r["overload"], r["load80"]
    share = o["admitted_share_of_capacity"]
    p99_bound = 3 * l80["admitted_p99_ms"]
    rss80, rss_over = r["rss_load80"].get("mean_mb"), r["rss_overload"].get("mean_mb")
    rss_ratio = rss_over / rss80 if rss80 and rss_over else None
    rec = r["recovery"]["recovered_after_s"]
    rows = [
        ("capacity (Similarity, 32 pairs, closed loop of 8)",
         f"{r['capacity_calls_per_s']} calls/s = {r['capacity_pairs_per_s']} pairs/s "
         f"(CPU: server {r['capacity_cpu']['server_cpu_pct']}%, client "
         f"{r['capacity_cpu']['client_cpu_pct']}% of one core)"
         + (f"; median of windows {r['capacity_windows_calls_per_s']} calls/s"
            if "capacity_windows_calls_per_s" in r else "")
         + (f"; after the overload {r['capacity_after_calls_per_s']} "
            f"(windows {r['capacity_after_windows_calls_per_s']}), mean "
            f"{r['capacity_mean_calls_per_s']}" if "capacity_after_calls_per_s" in r else ""),
         ""),
        ("unloaded batch-1 p50 / p99", f"{r['unloaded_batch1']['p50_ms']} / "
         f"{r['unloaded_batch1']['p99_ms']} ms", ""),
        ("80% load: admitted p50 / p99", f"{l80['admitted_p50_ms']} / {l80['admitted_p99_ms']} ms "
         f"({l80['codes']})", ""),
        (f"{r['overload_factor']}x for {r['overload_s']} s: offered / answered",
         f"{o['offered']} calls: {o['codes']} (CPU: server {o.get('server_cpu_pct')}%, "
         f"client {o.get('client_cpu_pct')}%; at 80%: {l80.get('server_cpu_pct')}% / "
         f"{l80.get('client_cpu_pct')}%)", ""),
        ("admitted throughput >= 90% of capacity",
         f"{o['admitted_per_s']} calls/s = {100 * share:.1f}%"
         + (" of the mean capacity" if "capacity_mean_calls_per_s" in r else ""),
         verdict(share >= 0.9)),
        ("rejections p99 <= 5 ms", f"p50 {o['rejected_p50_ms']} / p99 {o['rejected_p99_ms']} / "
         f"max {o['rejected_max_ms']} ms", verdict((o["rejected_p99_ms"] or 1e9) <= 5)),
        ("admitted p99 <= 3x the p99 at 80% load", f"{o['admitted_p99_ms']} ms vs "
         f"{p99_bound:.1f} ms", verdict(o["admitted_p99_ms"] <= p99_bound)),
        ("RSS within 10% of the 80%-load RSS", f"{rss_over} MB vs {rss80} MB mean "
         f"({fmt(None if rss_ratio is None else round(100 * (rss_ratio - 1), 1), '%')}); first/"
         f"last 10 s of overload {r.get('rss_overload_first_10s_mb')} / "
         f"{r.get('rss_overload_last_10s_mb')} MB",
         verdict(rss_ratio is not None and rss_ratio <= 1.10)),
        ("unloaded latency again within 5 s", f"{fmt(rec, ' s')} (probe bound "
         f"{r['recovery']['bound_ms']} ms)", verdict(rec is not None and rec <= 5)),
    ]
    return rows


def hostile(r):
    # The reference: the neighbour itself before the attacks (same process, same 50 ms
    # cadence) where recorded, else back-to-back calls from the harness.
    un = r.get("neighbour_idle") or r["unloaded_batch1"]
    ref = ("the neighbour before the attacks" if "neighbour_idle" in r
           else "unloaded back-to-back")
    nr, n4, na = r["neighbour_resources"], r["neighbour_item4"], r["neighbour_after"]
    rows = [
        ("attacks at once", "10 compression bombs, 64 EmbedStreams that never read, 4 slow "
         "/metrics clients, 64 idle TCP connections, 60 KiB metadata and malformed calls "
         f"every 200 ms; {r['attack_s']} s; answers {r['attack_codes']}"
         + (f"; attacker process at nice {r['attacker_nice']}" if "attacker_nice" in r
            else "; attackers in the harness's process (nice 0)"), ""),
        ("peak RSS <= 600 MB", f"{r['peak_rss_mb']} MB (idle {r['idle_rss_mb']} MB)",
         verdict(r["peak_rss_mb"] <= 600)),
        ("back within idle + 100 MB after", f"{r['rss_after_mb']} MB "
         f"(idle + {r['rss_after_mb'] - r['idle_rss_mb']:.1f})",
         verdict(r["rss_after_mb"] <= r["idle_rss_mb"] + 100)),
        ("neighbour (Similarity of 1 pair every 50 ms) during the attacks",
         f"p50 {nr['p50_ms']} / p99 {nr['p99_ms']} ms, {nr['codes']}; {ref}: p50 "
         f"{un['p50_ms']} / p99 {un['p99_ms']} ms (3x: {3 * un['p99_ms']:.1f})",
         verdict((nr["p99_ms"] or 1e9) <= 3 * un["p99_ms"] and list(nr["codes"]) == ["OK"])),
        ("item 4 (128 texts x 256 tokens) alone beside the neighbour",
         f"{r['item4_s']} s; neighbour p50 {n4['p50_ms']} / p99 {n4['p99_ms']} ms, "
         f"{n4['codes']}; one maximal batch "
         + (" / ".join(f"{k} tokens {v} ms" for k, v in r["max_batch_shapes_ms"].items())
            if "max_batch_shapes_ms" in r else f"(64 x 128 tokens) {r['max_batch_ms']} ms"),
         verdict((n4["p99_ms"] or 1e9) <= r["max_batch_ms"])),
        ("neighbour after", f"p50 {na['p50_ms']} / p99 {na['p99_ms']} ms, {na['codes']}", ""),
        ("server alive", str(r["server_alive"]), verdict(r["server_alive"])),
    ]
    return rows


def sigterm(r):
    runs = r["runs"]
    late = [x for x in runs if x["exit_s"] > x.get("last_ok_after_sigterm_s", 0) + 0.5]
    codes = {}
    for x in runs:
        for c, n in x["codes"].items():
            codes[c] = codes.get(c, 0) + n
    return [
        (f"{len(runs)} runs x {r['clients']} clients", f"answers {codes}", ""),
        ("exit code 0 every run", str(r["exit_codes"]), verdict(r["exit_codes"] == [0])),
        ("no accepted call lost; refused ones UNAVAILABLE", f"{r['not_ok_or_unavailable']} "
         "answers other than OK, UNAVAILABLE (and RESOURCE_EXHAUSTED before the signal)",
         verdict(r["not_ok_or_unavailable"] == 0)),
        ("exit within the in-flight work's time + 0.5 s",
         f"exit after SIGTERM median {r['exit_s_median']} s, max {r['exit_s_max']} s; exit "
         f"after the last accepted call's answer at most {r.get('exit_past_last_answer_s_max')}"
         f" s; runs past it + 0.5 s: {len(late)}",
         verdict(not late)),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--label", default="")
    a = p.parse_args()
    with open(a.results) as f:
        results = [json.loads(line) for line in f if line.strip()]
    print(f"### {a.label}\n" if a.label else "", end="")
    for r in results:
        rows = {"overload": overload, "hostile": hostile, "sigterm": sigterm}[r["scenario"]](r)
        print(f"\n#### {r['scenario']} (machine busy before: {100 * r['cpu_busy_before']:.1f}%, "
              f"load average after: {' '.join(r['loadavg_after'])}"
              f"{'; clients at nice ' + str(r['client_nice']) if r.get('client_nice') else ''})\n")
        print("| target | measured | |\n|---|---|---|")
        for name, value, v in rows:
            print(f"| {name} | {value} | {v} |")


if __name__ == "__main__":
    main()
