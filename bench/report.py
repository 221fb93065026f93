#!/usr/bin/env python3
"""Summarises the `beansctl bench --json` reports of a comparison (bench/lib.sh run_workloads).

Each workload ran REPEAT rounds per server, the two servers taking turns. Per workload and
server the table shows the median of the rounds in each column, with the throughput range. A
throughput ratio is the median of the per-round ratios (both servers of a round saw similar
background load); a p99 goal is judged on the median p99 of the subject's rounds.
"""
import argparse
import glob
import json
import os
import re
import statistics


def load_rounds(work, name, server):
    runs = {}
    for path in glob.glob(os.path.join(work, f"{glob.escape(name)}.{server}.r*.json")):
        m = re.search(r"\.r(\d+)\.json$", path)
        with open(path) as f:
            runs[int(m.group(1))] = json.load(f)
    if not runs:
        raise SystemExit(f"no reports for {name} against {server} in {work}")
    return runs


def errors(run):
    return sum(run["errors"].values())


def cpu_per_request(work, name, server, rnd, run):
    """(server, load generator) CPU µs per request of one run, from NAME.SERVER.rN.cpu (CPU
    seconds over the whole run, warm-up included); None for a run that preloaded keys first."""
    path = os.path.join(work, f"{name}.{server}.r{rnd}.cpu")
    if run.get("preload") or not os.path.exists(path):
        return None
    with open(path) as f:
        server_s, gen_s = map(float, f.read().split())
    cfg = run.get("config", {})
    measured = run["duration_s"]
    total = run["requests"] * (measured + cfg.get("warmup_s", 0)) / max(measured, 1e-9)
    if total <= 0:
        return None
    return server_s / total * 1e6, gen_s / total * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("open_rate")
    ap.add_argument("--servers", required=True, help="display order, e.g. proxy,direct")
    ap.add_argument("--subject", required=True, help="the server the goals are about")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--mix-ratio", type=float, required=True)
    ap.add_argument("--getm-ratio", type=float, required=True)
    ap.add_argument("--p99-ms", type=float, required=True)
    ap.add_argument("--getm-p99", action="store_true", help="also hold getm20's p99 to the goal")
    ap.add_argument("--conns", default="32", help="connections per run (for the labels)")
    a = ap.parse_args()

    names = ["mix", "getm20", f"mix@{a.open_rate}"]
    servers = a.servers.split(",")
    res = {(n, s): load_rounds(a.work, n, s) for n in names for s in servers}
    repeat = max(len(r) for r in res.values())

    print(f"{'workload':<12} {'server':<10} {'req/s':>10} {'range':>15} {'keys/s':>10} "
          f"{'p50':>7} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>8} {'cpu/req':>8} "
          f"{'gen/req':>8}  errors")
    for n in names:
        for s in servers:
            runs = res[(n, s)]
            rates = sorted(r["throughput_rps"] for r in runs.values())
            med = statistics.median(rates)
            keys_s = statistics.median(r["keys_per_s"] for r in runs.values())
            lat = {q: statistics.median(r["latency_us"][q] for r in runs.values())
                   for q in ("p50", "p90", "p99", "p999", "max")}
            span = f"{rates[0]:.0f}-{rates[-1]:.0f}"
            cpu = [c for i, x in runs.items()
                   if (c := cpu_per_request(a.work, n, s, i, x)) is not None]
            srv = f"{statistics.median(c[0] for c in cpu):.1f}" if cpu else "-"
            gen = f"{statistics.median(c[1] for c in cpu):.1f}" if cpu else "-"
            print(f"{n:<12} {s:<10} {med:>10.0f} {span:>15} {keys_s:>10.0f} "
                  f"{lat['p50']:>7.0f} {lat['p90']:>7.0f} {lat['p99']:>7.0f} {lat['p999']:>7.0f} "
                  f"{lat['max']:>8.0f} {srv:>8} {gen:>8}  {sum(errors(x) for x in runs.values())}")
    print(f"(each column the median of {repeat} rounds, the range covers all rounds; latency in µs; "
          "closed-loop latency is measured from the send, open-loop from the scheduled time;\n"
          " cpu/req: CPU µs per request of the server's processes (for the proxy: the proxy, "
          "its nodes and backup), gen/req: of the load generator; medians of the rounds that "
          "did not preload)")
    print()

    def ratio(n):
        subj, base = res[(n, a.subject)], res[(n, a.baseline)]
        per_round = [subj[i]["throughput_rps"] / max(base[i]["throughput_rps"], 1e-9)
                     for i in sorted(subj) if i in base]
        return statistics.median(per_round), min(per_round), max(per_round)

    def p99(n):
        return statistics.median(r["latency_us"]["p99"] for r in res[(n, a.subject)].values())

    pair = f"{a.subject}/{a.baseline}"
    checks = []
    for n, goal in (("mix", a.mix_ratio), ("getm20", a.getm_ratio)):
        m, lo, hi = ratio(n)
        checks.append((f"{n:<7} {pair} throughput {m:.2f}x (rounds {lo:.2f}-{hi:.2f}; "
                       f"goal >= {goal:.2f}x)", m >= goal))
    p99_names = [("mix", f"{a.conns}-connection closed loop")]
    if a.getm_p99:
        p99_names.append(("getm20", "closed loop"))
    p99_names.append((f"mix@{a.open_rate}", f"open loop at {a.open_rate}/s"))
    for n, what in p99_names:
        v = p99(n)
        label = n if not n.startswith("mix@") else "mix"
        checks.append((f"{label:<7} {a.subject} p99 {v / 1000:.2f} ms, {what} "
                       f"(goal <= {a.p99_ms:g} ms)", v <= a.p99_ms * 1000))
    for text, passed in checks:
        print(f"{'PASS' if passed else 'MISS'}  {text}")
    if any(errors(r) for runs in res.values() for r in runs.values()):
        print("note: some runs had errors; see the JSON reports (KEEP=1 keeps them)")


if __name__ == "__main__":
    main()
