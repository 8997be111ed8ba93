#!/usr/bin/env bash
# The cluster against local training on one machine (loopback):
#   local P processes | N nodes x 1 process | the same with one node SIGKILLed half-way |
#   the same through tools/netproxy.py (RTT and rate per link).
# usage: tools/cluster_bench.sh JOB.toml OUT_DIR [--set ...]   (env: NODES=2 RTT_MS=50 RATE_MB=125)
set -euo pipefail
job=$1; out=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
E=${ENGINE:-engine}; PY=${PYTHON:-python3}
nodes=${NODES:-2}; rtt=${RTT_MS:-50}; rate=${RATE_MB:-125}
mkdir -p "$out"
pids=(); addrs=(); proxied=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
ready() {  # wait until every worker log given says "ready on"
  for f in "$@"; do
    for _ in $(seq 600); do grep -q "ready on" "$f" 2>/dev/null && break; sleep 0.1; done
    grep -q "ready on" "$f" || { echo "worker did not start: $f" >&2; exit 1; }
  done
}
trap cleanup EXIT
for i in $(seq 1 "$nodes"); do
  port=$((9850 + i)); $E worker --port $port --workers 1 --name "n$i" > "$out/worker$i.log" 2>&1 &
  pids+=($!); addrs+=("\"127.0.0.1:$port\""); proxied+=("\"127.0.0.1:$((9950 + i))\"")
done
maps=(); for i in $(seq 1 "$nodes"); do maps+=(--map "$((9950 + i)):127.0.0.1:$((9850 + i))"); done
$PY "$here/tools/netproxy.py" "${maps[@]}" --rtt-ms "$rtt" --rate-mbytes "$rate" --max-seconds 7200 \
  > "$out/proxy.log" 2>&1 &
pids+=($!)
ready "$out"/worker*.log; sleep 1   # (the proxy starts in well under a second)
list=$(IFS=,; echo "${addrs[*]}"); plist=$(IFS=,; echo "${proxied[*]}")
run() {  # name, extra args...
  local name=$1; shift
  $E run "$job" "$@" --set "output.dir=\"$out/$name\"" > "$out/$name.log" 2>&1
}
run local --set "engine.workers=$nodes" "$@"
run cluster --set "cluster.nodes=[$list]" "$@"
# one node SIGKILLed half-way through training
( run cluster-kill --set "cluster.nodes=[$list]" "$@" ) &
runner=$!
until grep -q "cluster: exchanges" "$out/cluster-kill.log" 2>/dev/null; do sleep 0.5; done
t=$($PY -c "import json;print(json.load(open('$out/cluster/report.json'))['training_seconds'])")
sleep "$($PY -c "print($t / 2)")"; kill -9 "${pids[0]}"; echo "killed node n1 at $(date +%T)" >> "$out/cluster-kill.log"
wait $runner
$E worker --port 9851 --workers 1 --name n1 > "$out/worker1b.log" 2>&1 &
pids[0]=$!; ready "$out/worker1b.log"
run cluster-proxy --set "cluster.nodes=[$plist]" "$@"
$PY - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
base = None
print(f"{'run':<14} {'words/s':>11} {'vs local':>8} {'analogy':>8} {'WS353':>7} {'peak MB':>8}  cluster")
for name in ("local", "cluster", "cluster-kill", "cluster-proxy"):
    p = os.path.join(out, name, "report.json")
    if not os.path.exists(p):
        print(f"{name:<14} (no report)"); continue
    r = json.load(open(p)); ev = r.get("evaluation", {})
    acc = next(iter(ev.get("analogies", {}).values()), {}).get("accuracy", float("nan"))
    ws = next(iter(ev.get("similarity", {}).values()), {}).get("spearman", float("nan"))
    base = base or r["words_per_sec"]
    c = r.get("cluster")
    extra = ""
    if c:
        extra = (f"exchanges {c['exchanges']}, {c['bytes_from_nodes'] / c['trained_words']:.1f} B/word up, "
                 f"{c['bytes_to_nodes'] / c['trained_words']:.1f} down, chunks/epoch {c['chunks_per_epoch']}, "
                 f"dropped {[d['node'] for d in c['dropped']]}, node peak MB {[n['peak_mb'] for n in c['per_node']]}")
    print(f"{name:<14} {r['words_per_sec']:>11,.0f} {r['words_per_sec'] / base:>7.2f}x {acc:>8.4f} {ws:>7.4f} "
          f"{r['peak_rss_mb']:>8.0f}  {extra}")
PY
