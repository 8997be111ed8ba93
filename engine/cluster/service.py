"""`engine worker`: the Pyro4 service a dispatcher calls, one job at a time (a word2vec
NodeJob or an LSI LsiNodeJob), and `serve`, which runs it until SIGINT or SIGTERM. A
dispatcher that goes silent for its job's timeout loses the job; Ctrl-C, SIGTERM or a
crash leave no process, shared memory or cache folder behind."""
from __future__ import annotations

import gc
import logging
import os
import secrets
import threading
import time
from contextlib import contextmanager

import psutil

from ..runtime.memory import keep_freed_memory
from ..runtime.shm import sweep_orphans
from . import transport
from .lda_node import LdaNodeJob
from .lsi_node import LsiNodeJob
from .node import NodeJob, sweep_scratch
from .protocol import (
    MAX_ROUND_WORDS,
    check_band,
    check_cold,
    check_int as _int,
    check_name,
    check_num as _num,
)
from .transport import expose

log = logging.getLogger("engine")

MAX_WAIT = 600.0


class WorkerService:
    """What a dispatcher may call. One job at a time."""

    def __init__(self, workers: int, name: str, key: bytes | None = None):
        self.key = key
        self.workers = max(1, workers)
        self.name = name
        self.job: NodeJob | None = None
        self.lock = threading.RLock()
        self.started = time.time()
        self.worker_id = secrets.token_hex(8)   # one worker listed under two addresses
        self.jobs_done = 0
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="node-watchdog", daemon=True)
        self._watchdog.start()

    def _job(self, job_id) -> NodeJob:
        job = self.job
        if job is None or job_id != job.job_id:
            raise ValueError(f"no open job {job_id!r} on this worker")
        job.last_call = time.monotonic()
        return job

    @contextmanager
    def _using(self, job_id):
        job = self._job(job_id)
        with job.call():
            yield job

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                job = self.job
                if job is not None and time.monotonic() - job.last_call > job.timeout:
                    log.warning("job %s: no call from its dispatcher for %.0f s; dropping it",
                                job.job_id, job.timeout)
                    self._close_job()

    def _close_job(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
            gc.unfreeze()                        # what the job left is collectable again

    @expose
    def info(self) -> dict:
        vm = psutil.virtual_memory()
        return {"engine": transport.engine_version(), "protocol": transport.PROTOCOL,
                "name": self.name, "workers": self.workers,
                "cores": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
                "free_mb": round(vm.available / 2**20), "pid": os.getpid(),
                "busy": self.job.job_id if self.job else "", "jobs_done": self.jobs_done,
                "worker_id": self.worker_id}

    @expose
    def ping(self, job_id=None) -> float:
        """Alive? With a job id, also the dispatcher's heartbeat for that job."""
        if job_id is not None:
            self._job(job_id)
        return time.time()

    @expose
    def open_job(self, spec: dict) -> dict:
        if not isinstance(spec, dict):
            raise ValueError("open_job: expected a spec with a job id")
        check_name(spec.get("job"), "open_job: job id")
        with self.lock:
            if self.job is not None:
                if self.job.job_id != spec["job"]:
                    raise RuntimeError(f"busy with job {self.job.job_id}")
                self._close_job()                # the same dispatcher starts again
            kind = spec.get("kind", "word2vec")
            try:
                if kind == "lsi":
                    self.job = LsiNodeJob(spec, self.workers)
                elif kind == "lda":
                    self.job = LdaNodeJob(spec, self.workers)
                elif kind == "word2vec":
                    self.job = NodeJob(spec, self.workers, self.key)
                else:
                    raise ValueError(f"open_job: unknown kind {kind!r} (word2vec, lsi, lda)")
            except KeyError as exc:
                raise ValueError(f"open_job: missing field {exc}") from None
            # the heap as the job starts (modules, the job's own objects) is not scanned
            # by every collection of the exchange's short-lived objects
            gc.freeze()
            if kind == "lsi":
                log.info("job %s opened: LSI of %d terms, %d thread(s)", spec["job"],
                         self.job.n_terms, self.job.workers)
            elif kind == "lda":
                log.info("job %s opened: LDA of %d topics over %d terms, %d thread(s)",
                         spec["job"], self.job.num_topics, self.job.n_terms, self.job.workers)
            else:
                words, sync, tiers = self.job.local_hot
                log.info("job %s opened: %d processes, vocabulary %d, dim %d%s", spec["job"],
                         self.job.workers, self.job.vocab, self.job.dim,
                         f"; hot rows: {words} words on each process's own copy, merged "
                         f"every {sync} trained words" + (f" in {tiers} tiers" if tiers else "")
                         if words else "")
            if kind in ("lsi", "lda"):
                return {"workers": self.job.workers}
            return {"workers": self.job.workers,
                    "hot": list(self.job.local_hot) if words else [0, 0, 0]}

    @expose
    def put_array(self, job_id, name, start, packed) -> None:
        with self._using(job_id) as job:
            job.put_array(name, start, packed)

    @expose
    def seed_array(self, job_id, name, seed, crc) -> bool:
        with self._using(job_id) as job:
            return job.seed_array(name, seed, crc)

    @expose
    def start(self, job_id) -> None:
        with self.lock, self._using(job_id) as job:
            job.start()

    @expose
    def push_rows(self, job_id, name, rows, values) -> None:
        with self._using(job_id) as job:
            job.push_rows(name, rows, values)

    @expose
    def push_delta(self, job_id, name, rows, values) -> None:
        with self._using(job_id) as job:
            job.push_delta(name, rows, values)

    @expose
    def exchange(self, job_id, tasks, chunks, round_words, wait_seconds, cold, band) -> dict:
        check_cold(cold)
        check_band(band)
        with self._using(job_id) as job:
            job.add_chunks(chunks)
            job.add_tasks(tasks)
            job.wait_round(_int(round_words, 0, MAX_ROUND_WORDS, "round_words"),
                           _num(wait_seconds, 0.0, MAX_WAIT, "wait_seconds"))
            if job.stop.is_set():
                raise ValueError(f"job {job_id} was closed")
            reply = job.take_delta(cold, band=band)
            job.last_call = time.monotonic()
            return reply

    @expose
    def own_shard(self, job_id, index, count, generation) -> None:
        with self._using(job_id) as job:
            job.own_shard(index, count, generation)

    @expose
    def set_peers(self, job_id, peers, nodes) -> None:
        with self._using(job_id) as job:
            job.set_peers(peers, nodes)

    @expose
    def shard_put(self, job_id, shard, client, pieces) -> None:
        with self._using(job_id) as job:
            job.shard_put(shard, client, pieces)

    @expose
    def shard_sync(self, job_id, shard, client, cold, nodes, ack, band) -> dict:
        with self._using(job_id) as job:
            return job.shard_sync(shard, client, cold, nodes, ack, band=band)

    @expose
    def shard_pull(self, job_id, shard, client, piece) -> dict:
        with self._using(job_id) as job:
            return job.shard_pull(shard, client, piece)

    @expose
    def shard_read(self, job_id, shard, name, start, count) -> dict:
        with self._using(job_id) as job:
            return job.shard_read(shard, name, start, count)

    @expose
    def pull(self, job_id, piece) -> dict:
        with self._using(job_id) as job:
            return job.out_pieces[_int(piece, 0, len(job.out_pieces) - 1, "piece")]

    # ---- LSI jobs (engine.cluster.lsi_node) ----------------------------------------------------
    @contextmanager
    def _lsi(self, job_id):
        with self._using(job_id) as job:
            if not isinstance(job, LsiNodeJob):
                raise ValueError(f"job {job_id} is not an LSI job")
            yield job

    @expose
    def lsi_put(self, job_id, share, first_doc, indptr, indices, data) -> None:
        with self._lsi(job_id) as job:
            job.put_block(share, first_doc, indptr, indices, data)

    @expose
    def lsi_decompose(self, job_id, share) -> None:
        with self._lsi(job_id) as job:
            job.decompose(share)

    @expose
    def lsi_result(self, job_id, share, wait_seconds) -> dict:
        with self._lsi(job_id) as job:
            reply = job.result(share, wait_seconds)
            job.last_call = time.monotonic()
            return reply

    @expose
    def lsi_pull(self, job_id, share, piece) -> dict:
        with self._lsi(job_id) as job:
            return job.pull(share, piece)

    @expose
    def lsi_forget(self, job_id, share) -> None:
        with self._lsi(job_id) as job:
            job.forget(share)

    # ---- LDA jobs (engine.cluster.lda_node) ----------------------------------------------------
    @contextmanager
    def _lda(self, job_id):
        with self._using(job_id) as job:
            if not isinstance(job, LdaNodeJob):
                raise ValueError(f"job {job_id} is not an LDA job")
            yield job

    @expose
    def lda_put(self, job_id, chunk, n_terms, docs) -> None:
        with self._lda(job_id) as job:
            job.put_chunk(chunk, n_terms, docs)

    @expose
    def lda_rows(self, job_id, round_id, n_rows, numbers, rows) -> None:
        with self._lda(job_id) as job:
            job.put_rows(round_id, n_rows, numbers, rows)

    @expose
    def lda_estep(self, job_id, chunk, round_id, gamma, alpha) -> None:
        with self._lda(job_id) as job:
            job.estep(chunk, round_id, gamma, alpha)

    @expose
    def lda_result(self, job_id, chunk, wait_seconds) -> dict:
        with self._lda(job_id) as job:
            reply = job.result(chunk, wait_seconds)
            job.last_call = time.monotonic()
            return reply

    @expose
    def lda_statistics(self, job_id, round_id) -> dict:
        with self._lda(job_id) as job:
            return job.statistics(round_id)

    @expose
    def lda_pull(self, job_id, round_id, piece) -> dict:
        with self._lda(job_id) as job:
            return job.pull(round_id, piece)

    @expose
    def close_job(self, job_id) -> dict:
        with self.lock:
            job = self._job(job_id)
            if isinstance(job, (LsiNodeJob, LdaNodeJob)):
                self._close_job()
                self.jobs_done += 1
                log.info("job %s closed: %d documents %s here", job_id, job.documents,
                         "decomposed" if isinstance(job, LsiNodeJob) else "E-stepped")
                return {"documents": job.documents}
            wire, cpu = job.wire(), job.cpu()        # final, while its processes are up
            self._close_job()
            self.jobs_done += 1
            log.info("job %s closed: %d words trained here", job_id, job.total_words)
            return {"trained_words": job.total_words, "wire": wire, "cpu": cpu}

    def shutdown(self) -> None:
        self._stop.set()
        with self.lock:
            self._close_job()


def serve(host: str, port: int, workers: int, name: str, nameserver: str = "",
          key: bytes | None = None, ready=None) -> None:
    """Run a worker until SIGINT/SIGTERM (the caller turns those into exceptions)."""
    sweep_scratch()
    sweep_orphans()
    keep_freed_memory()                  # a node's exchange buffers, reused round after round
    service = WorkerService(workers, name, key)
    server = transport.Server(service, host, port, key)
    try:
        server.start()
        if nameserver:
            server.register(nameserver, name, key)
        log.info("engine worker %s listening on %s:%s (%d processes, key %s)%s", name,
                 server.host, server.port, workers, "set" if key else "none (loopback only)",
                 f", registered in {nameserver}" if nameserver else "")
        print(f"engine worker {name} ready on {server.host}:{server.port}", flush=True)
        if ready is not None:
            ready(server)
        while True:          # short naps: a signal caught by another thread runs its Python
            time.sleep(0.5)  # handler only when this (the main) thread runs again
    finally:
        service.shutdown()
        server.close()
