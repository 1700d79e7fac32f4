#!/usr/bin/python3
"""Builds the benchmark report (markdown + PNG plots) from embedserve result folders.

Usage:
  /usr/bin/python3 scripts/report.py RESULT_DIR [RESULT_DIR ...] --out docs/results
      [--baseline minilm_baseline] [--title "..."]

Each RESULT_DIR is either one run folder written by scripts/run_experiment.sh
(results/<experiment>/<timestamp>/ with bench.json) or any folder above such runs
(e.g. results/): then the newest run of each experiment found below it is used.
Writes OUT/report.md and OUT/plots/*.png. Needs Debian's python3 with
python3-matplotlib (plots) and python3-yaml (reads the stored configs).

Exit status: 0 written; 2 bad arguments or no usable result (message says which).
"""

import argparse
import json
import math
import os
import sys

# Acceptance targets of issue 6 (CPU machine, minilm-l6, Similarity, batch 32), shown
# next to the measured figures; the report states them, it does not enforce them.
TARGET_PAIRS_PER_S = {"fp32": 450.0, "bf16": 650.0}
TARGET_BATCHING_SPEEDUP = 2.5
TARGET_GRPC_EFFICIENCY = 0.90  # over gRPC / in process, Similarity at batch 32
BATCHING_CHECK_CONCURRENCY = 32


class ReportError(Exception):
    pass


def load_run(run_dir):
    """One run folder -> dict with its points and facts."""
    bench_path = os.path.join(run_dir, "bench.json")
    try:
        with open(bench_path) as f:
            bench = json.load(f)
    except FileNotFoundError:
        raise ReportError("%s: no bench.json (not a run folder of run_experiment.sh)" % run_dir)
    except json.JSONDecodeError as e:
        raise ReportError("%s: not valid JSON: %s" % (bench_path, e))
    if not isinstance(bench, dict) or not isinstance(bench.get("points"), list):
        raise ReportError("%s: expected {\"run\": {...}, \"points\": [...]}" % bench_path)
    info = bench.get("run", {})
    points = []
    for i, p in enumerate(bench["points"]):
        try:
            points.append({
                "batch": int(p["batch_size"]),
                "conc": int(p["concurrency"]),
                "rate": float(p.get("rate_rps", 0)),
                "items_per_s": float(p["items_per_s"]),
                "requests_per_s": float(p["requests_per_s"]),
                "ok": int(p["requests_ok"]),
                "failed": int(p["requests_failed"]),
                "errors": dict(p.get("errors", {})),
                "lat": {k: float(v) for k, v in p["latency_ms"].items()},
                "server": {k: float(v) for k, v in p["server_us"].items()},
                "tokens_per_item": float(p.get("tokens_per_item", 0)),
                "client_cpu_pct": float(p.get("client_cpu_pct", 0)),
                "not_sent": int(p.get("not_sent", 0)),
            })
        except (KeyError, TypeError, ValueError) as e:
            raise ReportError("%s: point %d is missing or has a bad field: %s" % (bench_path, i, e))
    machine = {}
    machine_path = os.path.join(run_dir, "machine.json")
    if os.path.exists(machine_path):
        with open(machine_path) as f:
            machine = json.load(f)
    run_rec = {}
    run_path = os.path.join(run_dir, "run.json")
    if os.path.exists(run_path):
        with open(run_path) as f:
            run_rec = json.load(f)
    inprocess = []
    inprocess_path = os.path.join(run_dir, "inprocess.json")
    if os.path.exists(inprocess_path):
        try:
            with open(inprocess_path) as f:
                for p in json.load(f)["points"]:
                    inprocess.append({"batch": int(p["batch_size"]), "items_per_s": float(p["items_per_s"]),
                                      "lat": {k: float(v) for k, v in p["latency_ms"].items()},
                                      "server": {k: float(v) for k, v in p["server_us"].items()}})
        except (ValueError, KeyError, TypeError) as e:
            raise ReportError("%s: not an inprocess result: %s" % (inprocess_path, e))
    name = info.get("experiment") or os.path.basename(os.path.dirname(os.path.abspath(run_dir)))
    return {
        "name": name,
        "dir": run_dir,
        "info": info,
        "machine": machine,
        "run": run_rec,
        "points": points,
        "inprocess": inprocess,
        "closed": [p for p in points if p["rate"] <= 0],
        "item": info.get("item", "items"),
        "method": info.get("method", "?"),
        "precision": machine.get("precision") or info.get("model.precision", "?"),
        "device": machine.get("device") or info.get("model.device", "?"),
    }


def find_runs(paths):
    """Expands the arguments to run folders: the newest run per experiment."""
    runs = {}
    for path in paths:
        if not os.path.isdir(path):
            raise ReportError("%s: not a directory" % path)
        if os.path.exists(os.path.join(path, "bench.json")):
            candidates = [path]
        else:
            candidates = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                if "bench.json" in files:
                    candidates.append(root)
            if not candidates:
                raise ReportError("%s: no bench.json below it" % path)
        for c in candidates:
            run = load_run(c)
            stamp = os.path.basename(os.path.abspath(c))
            key = run["name"]
            if key not in runs or stamp > runs[key][0]:
                runs[key] = (stamp, run)
    return [r for _, r in runs.values()]


def peak(run):
    pts = [p for p in run["closed"] if p["ok"] > 0] or [p for p in run["points"] if p["ok"] > 0]
    return max(pts, key=lambda p: p["items_per_s"]) if pts else None


def point(run, batch, conc):
    for p in run["closed"]:
        if p["batch"] == batch and p["conc"] == conc:
            return p
    return None


def fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "%.*f" % (digits, v)


def pct(v, base):
    if v is None or not base:
        return "n/a"
    return "%+.1f%%" % (100.0 * (v - base) / base)


def libtorch_of(run):
    for v in (run["machine"].get("libtorch"), run["info"].get("versions.libtorch"),
              run["info"].get("versions.torch"), run["info"].get("versions.runtime")):
        if v and v != "unknown":
            return v
    return "?"


def shown_path(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def split_of(p):
    """Mean request time split (ms): tokenize, queue, inference, other server, rest."""
    s = p["server"]
    tok, queue, inf, total = s.get("tokenize", 0), s.get("queue", 0), s.get("inference", 0), s.get("total", 0)
    if total > 0 and tok + queue + inf > total:
        # A request split over several batches: its queue_us (until its last batch
        # started) overlaps the inference of its earlier batches. Count the wait as what
        # is left of the server total, so the parts still add up to the latency.
        queue = max(0.0, total - tok - inf)
    other = max(0.0, total - tok - queue - inf)
    rest = s.get("rest", max(0.0, p["lat"]["avg"] * 1000 - total))
    return [tok / 1000, queue / 1000, inf / 1000, other / 1000, max(0.0, rest) / 1000]


SPLIT_NAMES = ["tokenize", "queue", "inference", "other server", "rest (network, serialization, client)"]


def write_plots(runs, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    n = len(runs)

    # Throughput against batch size, one line per concurrency, one panel per experiment.
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        for conc in sorted({p["conc"] for p in run["closed"]}):
            pts = sorted((p for p in run["closed"] if p["conc"] == conc), key=lambda p: p["batch"])
            if len(pts) >= 1:
                ax.plot([p["batch"] for p in pts], [p["items_per_s"] for p in pts], marker="o",
                        label="concurrency %d" % conc)
        ax.set_xscale("log", base=2)
        batches = sorted({p["batch"] for p in run["closed"]})
        if batches:
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size (%s per request)" % run["item"])
        ax.set_ylabel("%s/s" % run["item"])
        ax.set_title(run["name"])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plots["throughput"] = "plots/throughput_vs_batch.png"
    fig.savefig(os.path.join(out_dir, plots["throughput"]), dpi=100)
    plt.close(fig)

    # Latency percentiles against concurrency at batch 1 (else the smallest batch).
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        batches = sorted({p["batch"] for p in run["closed"]})
        if batches:
            b = batches[0]
            pts = sorted((p for p in run["closed"] if p["batch"] == b and p["ok"] > 0),
                         key=lambda p: p["conc"])
            for key in ("p50", "p95", "p99"):
                ax.plot([p["conc"] for p in pts], [p["lat"][key] for p in pts], marker="o", label=key)
            ax.set_title("%s (batch %d)" % (run["name"], b))
        ax.set_xscale("log", base=2)
        concs = sorted({p["conc"] for p in run["closed"]})
        if concs:
            ax.set_xticks(concs)
            ax.set_xticklabels([str(c) for c in concs])
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel("latency (ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    plots["latency"] = "plots/latency_vs_concurrency.png"
    fig.savefig(os.path.join(out_dir, plots["latency"]), dpi=100)
    plt.close(fig)

    # Time split: stacked bars, batch 1 x concurrency 1 and the peak of each experiment.
    labels, rows = [], []
    for run in runs:
        single = point(run, 1, 1)
        if single and single["ok"] > 0:
            labels.append("%s\nb1 c1" % run["name"])
            rows.append(split_of(single))
        pk = peak(run)
        if pk:
            labels.append("%s\npeak b%d c%d" % (run["name"], pk["batch"], pk["conc"]))
            rows.append(split_of(pk))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)) + 2.5, 4.5))
    bottom = [0.0] * len(rows)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#c44e52"]
    for i, name in enumerate(SPLIT_NAMES):
        vals = [r[i] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=name, color=colors[i])
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("mean request time (ms)")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    plots["split"] = "plots/time_split.png"
    fig.savefig(os.path.join(out_dir, plots["split"]), dpi=100)
    plt.close(fig)
    return plots


def build_report(runs, baseline_name, title, plots):
    lines = []
    w = lines.append
    base = next((r for r in runs if r["name"] == baseline_name), None)
    base_peak = peak(base)["items_per_s"] if base and peak(base) else None

    w("# %s" % title)
    w("")
    w("Generated by `scripts/report.py` from %d run folder(s). Throughput counts %s per "
      "second (one Similarity pair or one Embed text is one item). Latency is client-observed, "
      "in ms. Baseline: `%s`." % (len(runs), "/".join(sorted({r["item"] for r in runs})),
                                  baseline_name if base else "none found"))
    w("")

    w("## Runs and machines")
    w("")
    w("| experiment | method | model | precision | device | batching | CPU | cores | GPU | LibTorch | env | commit | folder |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m, i = r["machine"], r["info"]
        w("| %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | `%s` |" % (
            r["name"], r["method"], i.get("model.name", "?"),
            " (synthetic)" if i.get("model.synthetic") == "true" else "",
            r["precision"], r["device"], i.get("batching.enabled", "?"),
            m.get("cpu_model", "?"), m.get("cores_usable", m.get("cores_available", "?")),
            m.get("gpu", "?"),
            libtorch_of(r), m.get("env", "?"),
            m.get("git_commit", "?"), shown_path(r["dir"])))
    w("")

    w("## Peak throughput")
    w("")
    w("| experiment | peak items/s | requests/s | batch | concurrency | p50 ms | p99 ms | vs baseline |")
    w("|---|---|---|---|---|---|---|---|")
    for r in runs:
        pk = peak(r)
        if not pk:
            w("| %s | no successful point | | | | | | |" % r["name"])
            continue
        w("| %s | %s | %s | %d | %d | %s | %s | %s |" % (
            r["name"], fmt(pk["items_per_s"]), fmt(pk["requests_per_s"]), pk["batch"], pk["conc"],
            fmt(pk["lat"]["p50"], 2), fmt(pk["lat"]["p99"], 2),
            "baseline" if r is base else pct(pk["items_per_s"], base_peak)))
    w("")

    w("## Single-request latency (batch 1, concurrency 1)")
    w("")
    w("| experiment | avg ms | p50 ms | p95 ms | p99 ms | max ms | requests |")
    w("|---|---|---|---|---|---|---|")
    for r in runs:
        p = point(r, 1, 1)
        if not p or p["ok"] == 0:
            w("| %s | not measured | | | | | |" % r["name"])
            continue
        L = p["lat"]
        w("| %s | %s | %s | %s | %s | %s | %d |" % (r["name"], fmt(L["avg"], 2), fmt(L["p50"], 2),
                                                 fmt(L["p95"], 2), fmt(L["p99"], 2), fmt(L["max"], 2), p["ok"]))
    w("")

    w("## Scaling with batch size (concurrency 1)")
    w("")
    batches = sorted({p["batch"] for r in runs for p in r["closed"] if p["conc"] == 1})
    if batches:
        w("| experiment | " + " | ".join("b%d" % b for b in batches) + " | peak |")
        w("|---|" + "---|" * (len(batches) + 1))
        for r in runs:
            cells = []
            for b in batches:
                p = point(r, b, 1)
                cells.append(fmt(p["items_per_s"]) if p and p["ok"] > 0 else "")
            pk = peak(r)
            cells.append("%s (b%d c%d)" % (fmt(pk["items_per_s"]), pk["batch"], pk["conc"]) if pk else "")
            w("| %s | %s |" % (r["name"], " | ".join(cells)))
    else:
        w("No point at concurrency 1.")
    w("")
    w("Items/s per batch size at concurrency 1; the peak column is the best point of the whole sweep.")
    w("")

    w("## Where the time goes")
    w("")
    w("Mean per request, from the server's Timings in each response: tokenize, queue (enqueue until "
      "its last batch started), inference (forward + pooling of its batches), other server "
      "(total - the three), and rest = client latency - server total (network, (de)serialization, "
      "gRPC and client). Percent of the client latency in brackets. Where a request was split over "
      "several batches its queue time overlaps its earlier batches' inference; queue is then "
      "shown as server total - tokenize - inference.")
    w("")
    w("| experiment | point | tokenize ms | queue ms | inference ms | other server ms | rest ms | latency ms | largest |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        cand = []
        single = point(r, 1, 1)
        if single and single["ok"] > 0:
            cand.append(("b1 c1", single))
        pk = peak(r)
        if pk and pk is not single:
            cand.append(("peak b%d c%d" % (pk["batch"], pk["conc"]), pk))
        for label, p in cand:
            sp = split_of(p)
            total = sum(sp) or 1.0
            cells = ["%s (%d%%)" % (fmt(v, 3), round(100 * v / total)) for v in sp]
            largest = SPLIT_NAMES[max(range(len(sp)), key=lambda k: sp[k])].split(" (")[0]
            w("| %s | %s | %s | %s | %s |" % (r["name"], label, " | ".join(cells), fmt(p["lat"]["avg"], 3), largest))
    w("")

    # Same-point comparison at batch 1 (what dynamic batching changes).
    if base:
        others = [r for r in runs if r is not base]
        concs = sorted({p["conc"] for p in base["closed"] if p["batch"] == 1})
        if others and concs:
            w("## Batch-1 requests against the baseline, by concurrency")
            w("")
            w("Items/s at batch 1 and the ratio to `%s` at the same concurrency." % base["name"])
            w("")
            w("| experiment | " + " | ".join("c%d" % c for c in concs) + " |")
            w("|---|" + "---|" * len(concs))
            for r in [base] + others:
                cells = []
                for c in concs:
                    p, b = point(r, 1, c), point(base, 1, c)
                    if not p or p["ok"] == 0:
                        cells.append("")
                    elif r is base or not b or b["items_per_s"] <= 0:
                        cells.append(fmt(p["items_per_s"]))
                    else:
                        cells.append("%s (%.2fx)" % (fmt(p["items_per_s"]), p["items_per_s"] / b["items_per_s"]))
                w("| %s | %s |" % (r["name"], " | ".join(cells)))
            w("")

    with_ip = [r for r in runs if r["inprocess"]]
    if with_ip:
        w("## Over gRPC against in process")
        w("")
        w("The same model, precision and sentences run in process by `embedserve-bench-inprocess` "
          "(one thread, closed loop: tokenize, one Backend::Embed call, normalise, cosine; measured "
          "right after the sweep with the server stopped) against the sweep's best point at the same "
          "batch size over gRPC.")
        w("")
        w("| experiment | batch | in process items/s | over gRPC best items/s (concurrency) | gRPC / in process | over gRPC at c1 | c1 / in process |")
        w("|---|---|---|---|---|---|---|")
        for r in with_ip:
            for ip in sorted(r["inprocess"], key=lambda p: p["batch"]):
                pts = [p for p in r["closed"] if p["batch"] == ip["batch"] and p["ok"] > 0]
                best = max(pts, key=lambda p: p["items_per_s"]) if pts else None
                c1 = point(r, ip["batch"], 1)
                w("| %s | %d | %s | %s | %s | %s | %s |" % (
                    r["name"], ip["batch"], fmt(ip["items_per_s"]),
                    "%s (c%d)" % (fmt(best["items_per_s"]), best["conc"]) if best else "not measured",
                    "%.1f%%" % (100 * best["items_per_s"] / ip["items_per_s"]) if best and ip["items_per_s"] > 0 else "n/a",
                    fmt(c1["items_per_s"]) if c1 else "not measured",
                    "%.1f%%" % (100 * c1["items_per_s"] / ip["items_per_s"]) if c1 and ip["items_per_s"] > 0 else "n/a"))
        w("")

    w("## Acceptance figures (issue 6)")
    w("")
    checks = []
    for r in with_ip:
        if r["method"] != "similarity":
            continue
        ip = [p for p in r["inprocess"] if p["batch"] == 32 and p["items_per_s"] > 0]
        pts = [p for p in r["closed"] if p["batch"] == 32 and p["ok"] > 0]
        if ip and pts:
            best = max(pts, key=lambda p: p["items_per_s"])
            ratio = best["items_per_s"] / ip[0]["items_per_s"]
            checks.append("| Similarity batch 32 over gRPC / in process | %s | %.1f%% (c%d) | >= %.0f%% | %s |" % (
                r["name"], 100 * ratio, best["conc"], 100 * TARGET_GRPC_EFFICIENCY,
                "yes" if ratio >= TARGET_GRPC_EFFICIENCY else "no"))
    for r in runs:
        if r["method"] != "similarity":
            continue
        pts = [p for p in r["closed"] if p["batch"] == 32 and p["ok"] > 0]
        target = TARGET_PAIRS_PER_S.get(r["precision"])
        if pts and target and str(r["device"]).startswith("cpu"):
            best = max(pts, key=lambda p: p["items_per_s"])
            checks.append("| Similarity batch 32, %s, %s | %s | %s pairs/s (c%d) | >= %.0f | %s |" % (
                r["precision"], r["device"], r["name"], fmt(best["items_per_s"]), best["conc"], target,
                "yes" if best["items_per_s"] >= target else "no"))
    if base:
        b = point(base, 1, BATCHING_CHECK_CONCURRENCY)
        for r in runs:
            # Same precision and device as the baseline: the check is about batching alone.
            if (r is base or r["info"].get("batching.enabled") != "true"
                    or r["precision"] != base["precision"] or r["device"] != base["device"]):
                continue
            p = point(r, 1, BATCHING_CHECK_CONCURRENCY)
            if p and b and b["items_per_s"] > 0:
                ratio = p["items_per_s"] / b["items_per_s"]
                checks.append("| batch 1, concurrency %d vs batching-off baseline | %s | %.2fx | >= %.1fx | %s |" % (
                    BATCHING_CHECK_CONCURRENCY, r["name"], ratio, TARGET_BATCHING_SPEEDUP,
                    "yes" if ratio >= TARGET_BATCHING_SPEEDUP else "no"))
    if checks:
        w("| check | experiment | measured | target | met |")
        w("|---|---|---|---|---|")
        lines.extend(checks)
    else:
        w("No check applies to these runs.")
    w("")
    w("Checks need Similarity at batch 32 on CPU (fp32 >= %.0f, bf16 >= %.0f pairs/s), batch 1 "
      "at concurrency %d in both the baseline and a batching run of the same precision (>= %.1fx), and an in-process "
      "run at batch 32 (over gRPC >= %.0f%% of it)." % (
          TARGET_PAIRS_PER_S["fp32"], TARGET_PAIRS_PER_S["bf16"], BATCHING_CHECK_CONCURRENCY,
          TARGET_BATCHING_SPEEDUP, 100 * TARGET_GRPC_EFFICIENCY))
    w("")

    open_runs = [(r, [p for p in r["points"] if p["rate"] > 0]) for r in runs]
    open_runs = [(r, pts) for r, pts in open_runs if pts]
    if open_runs:
        w("## Open loop (fixed arrival rate)")
        w("")
        w("Latency counts from each request's scheduled send time. `not sent`: arrivals dropped "
          "because the in-flight cap was reached (the server could not keep up with the rate).")
        w("")
        w("| experiment | batch | rate req/s | achieved items/s | p50 ms | p95 ms | p99 ms | max ms | failed | not sent |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r, pts in open_runs:
            for p in sorted(pts, key=lambda p: (p["batch"], p["rate"])):
                w("| %s | %d | %s | %s | %s | %s | %s | %s | %d | %d |" % (
                    r["name"], p["batch"], fmt(p["rate"]), fmt(p["items_per_s"]), fmt(p["lat"]["p50"], 2),
                    fmt(p["lat"]["p95"], 2), fmt(p["lat"]["p99"], 2), fmt(p["lat"]["max"], 2),
                    p["failed"], p["not_sent"]))
        w("")

    errs = [(r["name"], p) for r in runs for p in r["points"] if p["failed"] > 0 or p["not_sent"] > 0]
    failures = [(r["name"], f) for r in runs for f in r["run"].get("failures", [])]
    w("## Errors and failures")
    w("")
    if not errs and not failures:
        w("None: every request of every point succeeded and every server started and stopped cleanly.")
    for name, f in failures:
        w("- `%s`: %s" % (name, f))
    for name, p in errs:
        w("- `%s` batch %d concurrency %d: %d failed (%s)%s" % (
            name, p["batch"], p["conc"], p["failed"],
            ", ".join("%s %d" % kv for kv in sorted(p["errors"].items())) or "-",
            "; %d arrivals not sent (open loop could not keep the rate)" % p["not_sent"] if p["not_sent"] else ""))
    w("")

    w("## Plots")
    w("")
    w("![throughput against batch size](%s)" % plots["throughput"])
    w("")
    w("![latency percentiles against concurrency](%s)" % plots["latency"])
    w("")
    w("![time split](%s)" % plots["split"])
    w("")

    w("## How these figures were made")
    w("")
    for r in runs:
        rr = r["run"]
        tok = [p["tokens_per_item"] for p in r["points"] if p["ok"] > 0 and p["tokens_per_item"] > 0]
        w("- `%s`: sweep of %d points, %s s measured after %s s warm-up per point, sentences `%s` "
          "(mean %s prompt tokens per %s as the server counted them), seed %s." % (
              r["name"], len(r["points"]), r["info"].get("duration_s", "?"), r["info"].get("warmup_s", "?"),
              r["info"].get("sentence_tokens", "?"), fmt(sum(tok) / len(tok)) if tok else "n/a",
              r["item"].rstrip("s"), r["info"].get("seed", "?")))
        if rr.get("server_command"):
            w("  - server: `%s`" % rr["server_command"])
        if rr.get("bench_command"):
            w("  - bench: `%s`" % rr["bench_command"])
        elif r["info"].get("command"):
            w("  - bench: `%s`" % r["info"]["command"])
        if rr.get("inprocess_command"):
            w("  - in process: `%s`" % rr["inprocess_command"])
    w("")
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(description="embedserve benchmark report")
    ap.add_argument("results", nargs="+", help="run folders or folders above them (e.g. results/)")
    ap.add_argument("--out", required=True, help="output folder (report.md, plots/)")
    ap.add_argument("--baseline", default=None,
                    help="experiment the others are compared with (default: the one named "
                         "*baseline*, else the first)")
    ap.add_argument("--title", default="embedserve benchmark report")
    args = ap.parse_args(argv)
    try:
        runs = find_runs(args.results)
    except ReportError as e:
        print("report.py: %s" % e, file=sys.stderr)
        return 2
    runs.sort(key=lambda r: r["name"])
    baseline = args.baseline
    if baseline is None:
        named = [r["name"] for r in runs if "baseline" in r["name"]]
        baseline = named[0] if named else runs[0]["name"]
    elif baseline not in {r["name"] for r in runs}:
        print("report.py: --baseline %s is not among the experiments: %s" % (
            baseline, ", ".join(r["name"] for r in runs)), file=sys.stderr)
        return 2
    # Baseline first, the rest by name.
    runs.sort(key=lambda r: (r["name"] != baseline, r["name"]))
    os.makedirs(args.out, exist_ok=True)
    plots = write_plots(runs, args.out)
    text = build_report(runs, baseline, args.title, plots)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    print("report.py: wrote %s and %d plots" % (os.path.join(args.out, "report.md"), len(plots)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
