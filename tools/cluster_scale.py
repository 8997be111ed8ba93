#!/usr/bin/env python3
"""Scale on paper: predicted cluster speedup for 2..64 nodes from measured numbers.

usage: python tools/cluster_scale.py [--report report.json] [--rate W/S] [--round-words N]
           [--up-bytes B] [--down-bytes B] [--n-measured N] [--full-bytes B]
           [--exchange-share S] [--json F]

Model. N worker nodes each train at `rate` words/s and, every `round_words`
words, exchange with the merge point(s): upload their delta (`up` bytes) and
download the rows changed since their last exchange (`down(N)` bytes).
  down(N) = min(full_bytes, down_measured * N / n_measured)   (more nodes, more rows)
  compute = round_words / rate * (1 + exchange_share)   (the exchange's CPU, packing,
           merging and rebasing on every node and the dispatcher, per unit of training
           CPU: taken from the node's cores, not overlapped)
  star:    one dispatcher, its link carries every node's traffic (full duplex):
           transfer = N * max(up, down(N)) / link
  sharded: rows split in N shards, each node is the merge point of one shard
           (all-to-all; `merge_at = "nodes"`, built); a node link sends its delta +
           its merged shard and receives its shard's deltas + all merged rows, while
           the dispatcher's link carries only the id-stream chunks (first epoch; later
           epochs read each node's cache):
           transfer = max(2 * max(up, down(N)), N * round_words * id_bytes) / link
  round T = max(compute, transfer); cluster words/s = N * round_words / T;
  speedup = cluster words/s / rate; efficiency = speedup / N.
Assumptions: training overlaps the exchange completely, so latency costs nothing
unless transfer > compute; links reach their nominal rate (no protocol overhead,
no contention elsewhere); up bytes do not depend on N; the exchange's CPU share does not
depend on N; the dispatcher/merge nodes are not otherwise busy. Speedup is over one node
training alone (no exchange). From a report, bytes are the nodes' own socket counts (frames
and payload, node to node included) per node and exchange. Link speeds: 1 Gbit/s = 125e6 B/s.
"""
import argparse
import json
import sys

NODES = (2, 4, 8, 16, 32, 64)
LINKS_GBIT = (1.0, 10.0)
DESIGNS = ("star", "sharded")
SCAN_MAX = 4096  # saturation search limit (node count)


def down_bytes(n, p):
    """Bytes a node downloads per exchange at n nodes."""
    return min(p["full_bytes"], p["down_bytes"] * n / p["n_measured"])


def round_times(design, n, link_gbit, p):
    """(compute seconds, transfer seconds on the busiest link) for one round."""
    link = link_gbit * 1e9 / 8.0
    compute = p["round_words"] / p["rate"] * (1.0 + p.get("exchange_share", 0.0))
    per = max(p["up_bytes"], down_bytes(n, p))
    if design == "star":
        transfer = n * per / link
    elif design == "sharded":
        transfer = max(2.0 * per, n * p["round_words"] * p.get("id_bytes", 4.0)) / link
    else:
        raise ValueError(design)
    return compute, transfer


def predict(design, n, link_gbit, p):
    """Dict of the model's numbers for one design, node count and link speed."""
    compute, transfer = round_times(design, n, link_gbit, p)
    t = max(compute, transfer)
    words_per_sec = n * p["round_words"] / t
    speedup = words_per_sec / p["rate"]
    return {"design": design, "nodes": n, "link_gbit": link_gbit,
            "down_bytes": down_bytes(n, p), "compute_s": compute, "transfer_s": transfer,
            "round_s": t, "words_per_sec": words_per_sec, "speedup": speedup,
            "efficiency": speedup / n, "saturated": transfer > compute}


def first_saturation(design, link_gbit, p, limit=SCAN_MAX):
    """Smallest node count (1..limit) where transfer > compute, or None."""
    for n in range(1, limit + 1):
        compute, transfer = round_times(design, n, link_gbit, p)
        if transfer > compute:
            return n
    return None


def from_report(path):
    """Model inputs (and a note list) from the `cluster` section of report.json."""
    with open(path) as f:
        c = json.load(f)["cluster"]
    notes = []
    ex = c["exchanges"]
    if not ex:
        raise SystemExit(f"{path}: cluster.exchanges is 0, nothing to model")
    rates = [float(d["words_per_sec"]) for d in c.get("per_node") or [] if "words_per_sec" in d]
    if rates:
        rate = sum(rates) / len(rates)
    else:
        rate = c["trained_words"] / c["seconds"] / c["nodes_used"]
        notes.append("no per_node words_per_sec: rate = trained_words / seconds / nodes_used "
                     "(includes exchange stalls, so it understates compute rate)")
    p = {"rate": rate, "round_words": c["trained_words"] / ex,
         "up_bytes": c["bytes_from_nodes"] / ex, "down_bytes": c["bytes_to_nodes"] / ex,
         "n_measured": c["nodes_used"], "full_bytes": c["weights_bytes"]}
    nodes = c.get("per_node") or []
    node_ex = sum(int(d.get("exchanges") or 0) for d in nodes)
    if node_ex and all("wire_sent" in d for d in nodes):    # every byte through the sockets
        p["up_bytes"] = sum(d["wire_sent"] for d in nodes) / node_ex
        p["down_bytes"] = sum(d["wire_received"] for d in nodes) / node_ex
        p["round_words"] = c["trained_words"] / node_ex
    if "cpu" in c:
        p["exchange_share"] = float(c["cpu"]["exchange_share"])
    if c.get("seconds"):
        notes.append(f"measured cluster: {c['nodes_used']} nodes, "
                     f"{c['trained_words'] / c['seconds']:,.0f} words/s overall "
                     f"(= {c['trained_words'] / c['seconds'] / rate:.2f} x mean node rate)")
    return p, notes


def build(p, nodes=NODES, links=LINKS_GBIT):
    """All predictions and saturation points as one JSON-able dict."""
    rows = [predict(d, n, g, p) for n in nodes for d in DESIGNS for g in links]
    sat = {f"{d} {g:g} Gbit/s": first_saturation(d, g, p) for d in DESIGNS for g in links}
    return {"inputs": p, "nodes": list(nodes), "links_gbit": list(links), "rows": rows,
            "saturation_nodes": sat, "saturation_scan_max": SCAN_MAX}


def render(result):
    """Plain-text table of speedup (efficiency) per node count and column."""
    p = result["inputs"]
    cols = [(d, g) for d in DESIGNS for g in result["links_gbit"]]
    lines = [
        f"rate {p['rate']:,.0f} words/s/node, round {p['round_words']:,.0f} words "
        f"({p['round_words'] / p['rate']:.3f} s compute), up {p['up_bytes'] / 1e6:.2f} MB, "
        f"down {p['down_bytes'] / 1e6:.2f} MB at {p['n_measured']:g} nodes, "
        f"full {p['full_bytes'] / 1e6:.2f} MB, exchange CPU "
        f"{p.get('exchange_share', 0.0):.2f} of training",
        "predicted speedup over one node (efficiency = speedup / nodes)", ""]
    heads = [f"{d} {g:g} Gbit/s" for d, g in cols]
    lines.append(f"{'nodes':>5}  " + "  ".join(f"{h:>20}" for h in heads))
    by_key = {(r["design"], r["nodes"], r["link_gbit"]): r for r in result["rows"]}
    for n in result["nodes"]:
        cells = []
        for d, g in cols:
            r = by_key[(d, n, g)]
            mark = "*" if r["saturated"] else " "
            cells.append(f"{r['speedup']:>9.2f}x ({100 * r['efficiency']:5.1f}%){mark}")
        lines.append(f"{n:>5}  " + "  ".join(f"{c:>20}" for c in cells))
    lines.append("  (* = busiest link saturated: transfer time > compute time)")
    lines.append("")
    sat = ", ".join(f"{k}: {v if v is not None else '> %d' % result['saturation_scan_max']}"
                    for k, v in result["saturation_nodes"].items())
    lines.append("first node count where the busiest link saturates: " + sat)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", help="report.json of `engine run` with a cluster section")
    ap.add_argument("--rate", type=float, help="words/s of one node's local compute")
    ap.add_argument("--round-words", type=float, help="words trained between exchanges")
    ap.add_argument("--up-bytes", type=float, help="bytes a node uploads per exchange")
    ap.add_argument("--down-bytes", type=float, help="bytes a node downloads per exchange")
    ap.add_argument("--n-measured", type=float, help="node count at which down-bytes was measured")
    ap.add_argument("--full-bytes", type=float, help="bytes of the whole trainable weights")
    ap.add_argument("--exchange-share", type=float,
                    help="the exchange's CPU over the training's (report: cluster.cpu)")
    ap.add_argument("--json", metavar="F", help="also write the numbers as JSON to F")
    args = ap.parse_args(argv)

    p, notes = (from_report(args.report) if args.report else ({}, []))
    for key in ("rate", "round_words", "up_bytes", "down_bytes", "n_measured", "full_bytes",
                "exchange_share"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    missing = [k for k in ("rate", "round_words", "up_bytes", "down_bytes", "n_measured",
                           "full_bytes") if k not in p]
    if missing:
        ap.error("missing inputs (give --report or flags): " + ", ".join(missing))
    for k in ("rate", "round_words", "n_measured", "full_bytes"):
        if p[k] <= 0:
            ap.error(f"{k} must be > 0")

    result = build(p)
    result["notes"] = notes
    for note in notes:
        print("note:", note)
    print(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
