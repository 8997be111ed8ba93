"""LSI at scale: engine's LsiModel and gensim's against an exact truncated SVD (scipy's
svds) of the same TF-IDF matrix, and the triplet accuracy of each U (fold-in U^T x, cosine).

    python tools/lsi_exact.py CORPUS TRIPLETS [--gensim]

CORPUS: one document a line (plain text, tokens split on whitespace), as a gensim user's
script reads it: Dictionary, filter_extremes(5, 0.5), TfidfModel, 200 topics with each
library's defaults. For each decomposition: its seconds, the triplet accuracy, its top
singular values, their relative errors against the exact ones, and how much of each
exact singular direction its U spans (the norm of U^T u_i; 1: all of it).
"""
import json
import sys
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from engine import Dictionary, LsiModel, TfidfModel
from engine.documents.blocks import bows_to_csr
from engine.documents.evaluate import triplet_accuracy

K = 200
corpus_path, trip = sys.argv[1], sys.argv[2]
t = time.perf_counter()
texts = [line.split() for line in open(corpus_path, encoding="utf-8") if line.strip()]
d = Dictionary(texts)
d.filter_extremes(no_below=5, no_above=0.5)
bows = [d.doc2bow(x) for x in texts]
del texts
tfidf = TfidfModel(bows)
A = tfidf.weigh(bows_to_csr(bows, len(d)))            # docs x terms, float64
print(f"{A.shape} nnz {A.nnz} prepared in {time.perf_counter() - t:.0f} s", flush=True)
res = {}
t = time.perf_counter()
e = LsiModel(tfidf[bows], id2word=d, num_topics=K, random_seed=1)
res["engine"] = (e.projection.u, e.projection.s, time.perf_counter() - t)
print("engine", res["engine"][2], flush=True)
if "--gensim" in sys.argv:
    import gensim.models
    t = time.perf_counter()
    rows = [list(zip(A.indices[A.indptr[r]:A.indptr[r + 1]].tolist(),
                     A.data[A.indptr[r]:A.indptr[r + 1]].tolist())) for r in range(A.shape[0])]
    g = gensim.models.LsiModel(rows, id2word={i: d[i] for i in range(len(d))},
                               num_topics=K, random_seed=1)   # as gensim users feed it
    res["gensim"] = (g.projection.u, g.projection.s, time.perf_counter() - t)
    print("gensim", res["gensim"][2], flush=True)
t = time.perf_counter()
u, s, _ = scipy.sparse.linalg.svds(A.T.tocsr(), k=K, tol=1e-8)
order = np.argsort(-s)
u, s = u[:, order], s[order]
res["exact"] = (u, s, time.perf_counter() - t)
print("exact", res["exact"][2], flush=True)
for name, (uu, ss, secs) in res.items():
    acc = triplet_accuracy(trip, d, tfidf, lambda m, uu=uu: np.asarray(m @ uu))["accuracy"]
    rel = np.abs(ss[:K] - s) / s
    # how much of each exact singular direction the approximation spans
    cap = np.linalg.norm(uu.T @ u, axis=0)
    print(json.dumps({"tool": name, "seconds": round(secs, 1), "triplets": round(acc, 4),
                      "s_top3": [round(float(x), 3) for x in ss[:3]],
                      "s_rel_err_first50": float(rel[:50].max()),
                      "s_rel_err_all": float(rel.max()),
                      "s_rel_err_median": float(np.median(rel)),
                      "captured_first50_min": float(cap[:50].min()),
                      "captured_last50_mean": float(cap[-50:].mean()),
                      "captured_mean": float(cap.mean())}), flush=True)
