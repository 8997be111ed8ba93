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
    else:
        sys.exit(f"unknown peer {tool!r}")
    print(json.dumps({"tool": tool, "threads": threads, "vocab_seconds": vocab_s,
                      "training_seconds": train_s, "corpus_words": words, "vocab_size": vocab,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "pid": os.getpid()}))


if __name__ == "__main__":
    main(sys.argv)
