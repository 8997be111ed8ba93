"""Train a peer tool (gensim, gensim with corpus_file, fastText) on a job's settings and
print one JSON line of timings. Runs under any Python that has the peer installed (a
separate virtualenv: peers never enter engine's own install); uses only the standard
library besides the peer itself, so engine need not be importable there.

usage: python peers_runner.py TOOL CORPUS SETTINGS_JSON THREADS OUT_VECTORS
"""
import json
import os
import resource
import sys
import time


def _gensim(corpus, s, threads, out, corpus_file):
    import logging

    logging.disable(logging.CRITICAL)
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    model = Word2Vec(sg=s["sg"], hs=s["hs"], negative=s["negative"], vector_size=s["vector_size"],
                     window=s["window"], sample=s["sample"], min_count=s["min_count"],
                     alpha=s["alpha"], min_alpha=s["min_alpha"], epochs=s["epochs"],
                     cbow_mean=s["cbow_mean"], ns_exponent=s["ns_exponent"],
                     max_final_vocab=s["max_final_vocab"] or None, workers=threads, seed=s["seed"])
    t0 = time.perf_counter()
    if corpus_file:
        model.build_vocab(corpus_file=corpus)
    else:
        model.build_vocab(corpus_iterable=LineSentence(corpus))
    t1 = time.perf_counter()
    if corpus_file:
        model.train(corpus_file=corpus, total_words=model.corpus_total_words, epochs=s["epochs"])
    else:
        model.train(corpus_iterable=LineSentence(corpus), total_examples=model.corpus_count,
                    total_words=model.corpus_total_words, epochs=s["epochs"])
    t2 = time.perf_counter()
    model.wv.save_word2vec_format(out, binary=True)
    return t1 - t0, t2 - t1, model.corpus_total_words, len(model.wv)


def _fasttext(corpus, s, threads, out):
    import fasttext

    t0 = time.perf_counter()
    model = fasttext.train_unsupervised(
        input=corpus, model="skipgram" if s["sg"] else "cbow", dim=s["vector_size"],
        ws=s["window"], neg=s["negative"], loss="hs" if s["hs"] else "ns", t=s["sample"],
        minCount=s["min_count"], epoch=s["epochs"], lr=s["alpha"], thread=threads, minn=0,
        maxn=0, wordNgrams=1, verbose=0)
    t1 = time.perf_counter()
    words = model.get_words()
    with open(out, "wb") as fh:
        fh.write(f"{len(words)} {s['vector_size']}\n".encode())
        for w in words:
            fh.write(w.encode() + b" " + model.get_word_vector(w).astype("<f4").tobytes() + b"\n")
    # fastText builds its vocabulary inside train_unsupervised: its time counts as training
    return 0.0, t1 - t0, None, len(words)


# ---- LSI (engine bench on an [lsi] job) --------------------------------------------------------

def _open_text(path):
    """A documents file as text lines, .gz/.bz2/.xz read as they are."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(
        os.path.splitext(path)[1], open)
    return opener(path, "rt", encoding="utf-8")


class _Docs:
    """The documents as token lists (ID<TAB>text: the text after the first tab when
    `ids` says so, as engine reads them), re-iterable."""

    def __init__(self, path, ids):
        self.path, self.ids = path, ids

    def __iter__(self):
        with _open_text(self.path) as fh:
            for line in fh:
                if self.ids != "none" and "\t" in line:
                    line = line.split("\t", 1)[1]
                yield line.split()


def _gensim_lsi(corpus, s, threads, distributed):
    """gensim's own pipeline: Dictionary, filter_extremes, TfidfModel, LsiModel (serial, or
    distributed=True over the Pyro4 dispatcher and workers started by the caller); the
    triplets folded in as gensim users do (lsi[tfidf[bow]])."""
    import logging

    logging.disable(logging.CRITICAL)
    import numpy as np
    from gensim.corpora import Dictionary
    from gensim.matutils import corpus2dense
    from gensim.models import LsiModel, TfidfModel

    t0 = time.perf_counter()
    docs = _Docs(corpus, s.get("ids", "auto"))
    dictionary = Dictionary(docs)
    dictionary.filter_extremes(no_below=s["no_below"], no_above=s["no_above"],
                               keep_n=s["keep_n"] or None)
    bows = [dictionary.doc2bow(d) for d in docs]
    tfidf = TfidfModel(bows)
    weighted = tfidf[bows]
    t1 = time.perf_counter()
    # gensim's default chunksize (20000) serially; distributed, one job per worker (its
    # fastest split: smaller jobs each cost a whole rank-k decomposition and a merge)
    chunksize = -(-len(bows) // threads) if distributed else 20000
    lsi = LsiModel(weighted, id2word=dictionary, num_topics=s["num_topics"],
                   chunksize=chunksize, power_iters=s["power_iters"],
                   extra_samples=s["extra_samples"], distributed=distributed)
    t2 = time.perf_counter()
    accuracy = None
    if s.get("triplets"):
        parts = [[], [], []]
        with open(s["triplets"], encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    for i, p in enumerate(line.rstrip("\n").split("\t")):
                        parts[i].append(dictionary.doc2bow(p.split()))
        k = len(lsi.projection.s)
        a, b, c = (corpus2dense(lsi[tfidf[x]], k).T for x in parts)

        def unit(v):
            n = np.linalg.norm(v, axis=1, keepdims=True)
            n[n == 0] = 1
            return v / n
        a, b, c = unit(a), unit(b), unit(c)
        accuracy = float(np.mean(np.einsum("ij,ij->i", a, b) > np.einsum("ij,ij->i", a, c)))
    return t1 - t0, t2 - t1, len(dictionary), accuracy


def _halves(docs):
    """Each bag-of-words document's tokens dealt alternately, in term order, into two
    halves (engine.documents.lda.split_halves' rule): the first halves as bags of words,
    the second as CSR arrays (data, indices, indptr)."""
    first, data, indices, indptr = [], [], [], [0]
    for doc in docs:
        a, pos = [], 0
        for term, count in sorted(doc):
            mine = (count + (pos % 2 == 0)) // 2
            pos += count
            if mine:
                a.append((term, mine))
            if count - mine:
                indices.append(term)
                data.append(float(count - mine))
        first.append(a)
        indptr.append(len(indices))
    return first, (data, indices, indptr)


def _gensim_lda(corpus, s, workers, out, kind):
    """gensim's own pipeline (Dictionary, filter_extremes, doc2bow), then LdaModel,
    LdaMulticore(workers) or LdaModel(distributed=True) on every document but the held-out
    ones, which engine's [lda] job picks the same way (`held_out` spread evenly); each
    held-out document's tokens dealt alternately, in term order, into two halves as
    engine.documents.lda.split_halves deals them (this script runs without engine); the
    topics, the mixes inferred from the first halves and the second halves to `out`."""
    import logging

    logging.disable(logging.CRITICAL)
    import numpy as np
    from gensim.corpora import Dictionary
    from gensim.models import LdaModel, LdaMulticore

    t0 = time.perf_counter()
    docs = list(_Docs(corpus, s.get("ids", "auto")))
    dictionary = Dictionary(docs)
    dictionary.filter_extremes(no_below=s["no_below"], no_above=s["no_above"],
                               keep_n=s["keep_n"] or None)
    bows = [dictionary.doc2bow(d) for d in docs]
    n, h = len(bows), s["held_out"]
    held = set(np.linspace(0, n - 1, h).round().astype(int).tolist()) \
        if h > 0 and n >= 2 * h else set()
    train = [b for i, b in enumerate(bows) if i not in held]
    t1 = time.perf_counter()
    kw = {"num_topics": s["num_topics"], "id2word": dictionary, "chunksize": s["chunksize"],
          "passes": s["passes"], "alpha": s["alpha"], "eta": s["eta"], "decay": s["decay"],
          "offset": s["offset"], "iterations": s["iterations"],
          "gamma_threshold": s["gamma_threshold"], "random_state": s["seed"],
          "eval_every": None, "dtype": np.dtype(s["dtype"])}
    if kind == "multicore":
        model = LdaMulticore(train, workers=workers, batch=s["update_every"] == 0, **kw)
    else:
        model = LdaModel(train, update_every=s["update_every"],
                         distributed=kind == "distributed", **kw)
    t2 = time.perf_counter()
    first, (data, indices, indptr) = _halves([bows[i] for i in sorted(held)])
    theta = np.zeros((0, s["num_topics"]))
    if first:
        gamma, _ = model.inference(first)
        theta = gamma / gamma.sum(axis=1, keepdims=True)
    np.savez(out, topics=model.get_topics().astype(np.float64), theta=theta,
             data=np.array(data), indices=np.array(indices, np.int32),
             indptr=np.array(indptr, np.int64))
    return t1 - t0, t2 - t1, len(dictionary), n, len(held)


def main(argv):
    tool, corpus, settings, threads, out = argv[1:6]
    s = json.loads(settings)
    threads = int(threads)
    if tool == "gensim":
        vocab_s, train_s, words, vocab = _gensim(corpus, s, threads, out, False)
    elif tool == "gensim-corpusfile":
        vocab_s, train_s, words, vocab = _gensim(corpus, s, threads, out, True)
    elif tool == "fasttext":
        vocab_s, train_s, words, vocab = _fasttext(corpus, s, threads, out)
    elif tool in ("gensim-lsi", "gensim-lsi-distributed"):
        prep_s, train_s, terms, accuracy = _gensim_lsi(corpus, s, threads,
                                                       tool == "gensim-lsi-distributed")
        print(json.dumps({"tool": tool, "threads": threads, "prepare_seconds": prep_s,
                          "training_seconds": train_s, "terms": terms, "accuracy": accuracy,
                          "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 1024, "pid": os.getpid()}))
        return
    elif tool in ("gensim-lda", "gensim-lda-multicore", "gensim-lda-distributed"):
        kind = tool[len("gensim-lda-"):] if tool != "gensim-lda" else "serial"
        prep_s, train_s, terms, n_docs, held = _gensim_lda(corpus, s, threads, out, kind)
        print(json.dumps({"tool": tool, "threads": threads, "prepare_seconds": prep_s,
                          "training_seconds": train_s, "terms": terms, "documents": n_docs,
                          "held_out": held,
                          "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 1024, "pid": os.getpid()}))
        return
    else:
        sys.exit(f"unknown peer {tool!r}")
    print(json.dumps({"tool": tool, "threads": threads, "vocab_seconds": vocab_s,
                      "training_seconds": train_s, "corpus_words": words, "vocab_size": vocab,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv)
