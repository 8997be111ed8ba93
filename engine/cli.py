"""The `engine` command: `engine run JOB.toml`, `engine bench --threads 1..8`,
`engine report OUT_DIR` (plots and a page), `engine worker` (a cluster node),
`engine nodes JOB.toml`, `engine nameserver`."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from .errors import EngineError, Interrupted, WorkerError

log = logging.getLogger("engine")


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def _print_summary(report: dict) -> None:
    print(f"corpus: {report['corpus']} ({report['corpus_words']:,} words, "
          f"vocabulary {report['vocab_size']:,})")
    print(f"training: {report['training_seconds']:.1f} s, {report['words_per_sec']:,.0f} "
          f"words/s with {report['workers']} process(es); peak memory "
          f"{report['peak_rss_mb']:.0f} MB")
    for path, r in report.get("evaluation", {}).get("analogies", {}).items():
        print(f"analogies: {r['accuracy']:.4f} over {r['evaluated']} questions ({path})")
    for path, r in report.get("evaluation", {}).get("similarity", {}).items():
        print(f"word pairs: spearman {r['spearman']:.4f}, pearson {r['pearson']:.4f}, "
              f"oov {r['oov_pct']:.1f}% ({path})")
    for word, near in report.get("neighbours", {}).items():
        print(f"  {word:>12} -> " + ", ".join(f"{w} ({s:.2f})" for w, s in near))
    if report.get("lost_workers"):
        print(f"note: {len(report['lost_workers'])} training process(es) died; their chunks "
              f"were retrained by the others")


def _print_lsi_summary(r: dict, out: str) -> None:
    print(f"LSI: {r['documents']:,} documents, {r['terms']:,} terms, {r['topics']} topics "
          f"({r['method']}) in {r['seconds']['total']:.1f} s; peak memory "
          f"{r.get('peak_memory_mb', 0):.0f} MB")
    if r.get("triplets"):
        t = r["triplets"]
        print(f"triplets: {t['lsi']['accuracy']:.4f} (TF-IDF alone {t['tfidf']['accuracy']:.4f})")
    print(f"wrote {out}/topics.txt, doc_vectors.npy, doc_ids.txt, u.npy, singular_values.npy, "
          f"dictionary.json, report.json")


def _print_lda_summary(r: dict, out: str) -> None:
    last = r["passes"][-1] if r.get("passes") else {}
    print(f"LDA: {r['documents']:,} documents ({r['held_out']:,} held out), {r['terms']:,} "
          f"terms, {r['topics']} topics, {len(r.get('passes', []))} pass(es) in "
          f"{r['seconds']['train']:.1f} s ({r['documents_per_second']:,.0f} documents/s, "
          f"{r['workers']} thread(s)); peak memory {r.get('peak_memory_mb', 0):.0f} MB")
    if "held_out_perplexity" in last:
        print(f"held-out perplexity {last['held_out_perplexity']:.1f}, per-word bound "
              f"{last['per_word_bound']:.3f}; u_mass coherence {r['coherence_u_mass']:.3f}")
    print(f"wrote {out}/topics.txt, doc_topics.npy, doc_ids.txt, model.npz, dictionary.json, "
          f"report.json")


def cmd_run(args) -> int:
    from .config import load_job
    from .jobs.run import run_job

    job = load_job(args.job, args.set)
    report = run_job(job, show_progress=not args.quiet, resume=args.resume)
    if report.get("model") == "lsi":
        _print_lsi_summary(report, job.output.dir)
        return 0
    if report.get("model") == "lda":
        _print_lda_summary(report, job.output.dir)
        return 0
    _print_summary(report)
    print(f"wrote {job.output.dir}/vectors.bin, {job.output.dir}/model/, "
          f"{job.output.dir}/report.json")
    return 0


def cmd_worker(args) -> int:
    import faulthandler

    from .cluster import service, transport
    from .config import physical_cores

    faulthandler.register(signal.SIGUSR1, all_threads=True)   # `kill -USR1`: where is it?
    key = transport.read_key(args.key_file)
    workers = args.workers or physical_cores()
    host, port = args.host, args.port
    name = args.name or f"{__import__('socket').gethostname()}-{port}"
    service.serve(host, port, workers, name, args.nameserver, key)
    return 0


def cmd_nodes(args) -> int:
    from .cluster import probe_nodes
    from .config import load_job

    job = load_job(args.job, args.set)
    if not job.cluster.enabled:
        print(f"{args.job}: no [cluster] nodes or nameserver: the job trains locally")
        return 0
    rows = probe_nodes(job.cluster, timeout=args.timeout)
    ok = 0
    for r in rows:
        if r["ok"]:
            ok += 1
            print(f"{r['address']:<28} {r['name']:<20} engine {r['engine']:<8} "
                  f"{r['cores']:>3} cores  {r['workers']:>3} processes  "
                  f"{r['free_mb']:>8,} MB free  rtt {r['rtt_ms']:.2f} ms"
                  + (f"  ({r['why']})" if r.get("why") else ""))
        else:
            print(f"{r['address']:<28} unreachable: {r['why']}")
    print(f"{ok} of {len(rows)} node(s) reachable")
    return 0 if ok else 1


def cmd_nameserver(args) -> int:
    from .cluster import transport

    key = transport.read_key(args.key_file)
    print(f"engine name server on {args.host}:{args.port} (msgpack, key "
          f"{'set' if key else 'none'})", flush=True)
    transport.start_nameserver(args.host, args.port, key, broadcast=not args.no_broadcast)
    return 0


def cmd_bench(args) -> int:
    from .bench.word2vec import run_bench

    return run_bench(args)


def cmd_report(args) -> int:
    from .bench.report import run_report

    return run_report(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train, save and evaluate a job")
    r.add_argument("job", help="job file (TOML), e.g. conf/job.toml")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a job setting (repeatable), e.g. --set model.sg=1")
    r.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    r.add_argument("--resume", action="store_true",
                   help="continue from the job's latest checkpoint (OUT/checkpoints; see "
                        "[output] checkpoint_every)")
    r.set_defaults(func=cmd_run)
    from .bench.word2vec import add_arguments

    w = sub.add_parser("worker", help="serve this machine as a cluster node")
    w.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a key)")
    w.add_argument("--port", type=int, default=9877, help="port (default 9877; 0 = any free)")
    w.add_argument("--workers", type=int, default=0,
                   help="training processes (default: physical cores)")
    w.add_argument("--name", default="", help="node name (default HOST-PORT)")
    w.add_argument("--nameserver", default="", metavar="HOST[:PORT]|auto",
                   help="register in this Pyro4 name server ('auto': find it by broadcast)")
    w.add_argument("--key-file", default="",
                   help="file holding the cluster key (else $ENGINE_CLUSTER_KEY)")
    w.set_defaults(func=cmd_worker)
    n = sub.add_parser("nodes", help="list the nodes a job would use")
    n.add_argument("job", help="job file (TOML) with a [cluster] section")
    n.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    n.add_argument("--timeout", type=float, default=5.0, help="seconds per node (default 5)")
    n.set_defaults(func=cmd_nodes)
    ns = sub.add_parser("nameserver", help="run a Pyro4 name server for engine workers")
    ns.add_argument("--host", default="127.0.0.1")
    ns.add_argument("--port", type=int, default=9090)
    ns.add_argument("--no-broadcast", action="store_true", help="no broadcast discovery")
    ns.add_argument("--key-file", default="")
    ns.set_defaults(func=cmd_nameserver)
    b = sub.add_parser("bench", help="speed / memory / accuracy per process count")
    add_arguments(b)
    b.set_defaults(func=cmd_bench)
    rp = sub.add_parser("report", help="plots and an offline report.html of finished runs")
    rp.add_argument("out_dir", metavar="OUT_DIR",
                    help="output folder of an `engine run` (it holds report.json)")
    rp.add_argument("--compare", nargs="+", action="extend", default=[], metavar="OTHER_DIR",
                    help="more run folders, overlaid on the same plots")
    rp.add_argument("--out", default="", metavar="DIR",
                    help="write the PNGs and report.html here (default: OUT_DIR)")
    rp.set_defaults(func=cmd_report)
    return p


def _on_sigterm(signum, frame):
    raise Interrupted("terminated (SIGTERM); stopped cleanly", exit_code=143)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except Interrupted as exc:
        print(f"\nengine: {exc}", file=sys.stderr)
        return exc.exit_code
    except WorkerError as exc:
        print(f"engine: error: {exc}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"engine: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nengine: interrupted (Ctrl-C); stopped cleanly", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
