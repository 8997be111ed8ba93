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
    else:
        sys.exit(f"unknown peer {tool!r}")
    print(json.dumps({"tool": tool, "threads": threads, "vocab_seconds": vocab_s,
                      "training_seconds": train_s, "corpus_words": words, "vocab_size": vocab,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv)
