"""Slow numpy twins of the Cython kernels, written from the algorithm's description, with the
same RNG draw order, so one chunk of training can be compared update for update."""
import numpy as np

MASK64 = (1 << 64) - 1
ONE32 = 1 << 32
KEEP_ALWAYS = ONE32 - 1
F = np.float32


class SplitMix:
    def __init__(self, seed):
        self.s = seed & MASK64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def sigmoid_table(size=1000, max_exp=6.0):
    i = np.arange(size + 1, dtype=np.float64)          # one extra: (f + 6) * scale may hit 1000
    e = np.exp((i / size * 2.0 - 1.0) * max_exp)
    return (e / (e + 1.0)).astype(np.float32)


TABLE = sigmoid_table()
SCALE = F(1000) / F(6) / F(2)


def lookup(f):
    return TABLE[int((F(f) + F(6)) * SCALE)]


# the loss of one prediction: -log sigma(f) towards label 1, -log(1 - sigma(f)) towards 0,
# from the table entry the gradient uses; a saturated score (no update) exactly
NLL0 = (-np.log(1.0 - TABLE.astype(np.float64))).astype(np.float32)
NLL1 = (-np.log(TABLE.astype(np.float64))).astype(np.float32)


def nll(f, label):
    if -6 < f < 6:
        i = int((F(f) + F(6)) * SCALE)
        return float(NLL1[i] if label else NLL0[i])
    x = float(f) if label else -float(f)
    return float(np.log1p(np.exp(-abs(x))) + max(-x, 0.0))


LOSS = [0.0, 0]          # summed loss, examples (updates) of the last ref_train


def ref_out_ns(h, syn1neg, targets, alpha):
    neu1e = np.zeros_like(h)
    for k, t in enumerate(targets):
        l2 = syn1neg[t]
        f = F(np.dot(h.astype(np.float64), l2.astype(np.float64)))
        label = F(1.0) if k == 0 else F(0.0)
        if f == f:
            LOSS[0] += nll(f, k == 0)
        if not (-6 < f < 6):
            continue
        g = (label - lookup(f)) * F(alpha)
        neu1e += g * l2
        syn1neg[t] += g * h
    return neu1e


def ref_out_ns_two_pass(h, syn1neg, targets, alpha):
    """ref_out_ns with every score taken first, from the rows before any update."""
    gs = []
    for k, t in enumerate(targets):
        f = F(np.dot(h.astype(np.float64), syn1neg[t].astype(np.float64)))
        if f == f:
            LOSS[0] += nll(f, k == 0)
        label = F(1.0) if k == 0 else F(0.0)
        gs.append((label - lookup(f)) * F(alpha) if -6 < f < 6 else F(0.0))
    neu1e = np.zeros_like(h)
    for t, g in zip(targets, gs):
        neu1e += g * syn1neg[t]
        syn1neg[t] += g * h
    return neu1e


def ref_out_hs(h, syn1, points, codes, alpha):
    neu1e = np.zeros_like(h)
    for p, c in zip(points, codes):
        l2 = syn1[p]
        f = F(np.dot(h.astype(np.float64), l2.astype(np.float64)))
        if f == f:
            LOSS[0] += nll(f, 1 - int(c))
        if not (-6 < f < 6):
            continue
        g = (F(1) - F(c) - lookup(f)) * F(alpha)
        neu1e += g * l2
        syn1[p] += g * h
    return neu1e


def _noise(a, rng):
    v = a["syn0"].shape[0]
    r = rng.next()
    bucket = ((r >> 32) * v) >> 32
    entry = int(a["noise"][bucket])
    return bucket if (r & 0xFFFFFFFF) < (entry & 0xFFFFFFFF) else entry >> 32


def _targets(a, word, rng, negative):
    out = [word]
    for _ in range(negative):
        t = _noise(a, rng)
        if t != word:
            out.append(t)
    return out


def _output(a, s, word, h, alpha, rng):
    LOSS[1] += 1
    neu1e = np.zeros_like(h)
    if s["hs"]:
        n = a["code_lens"][word]
        neu1e += ref_out_hs(h, a["syn1"], a["points"][word, :n], a["codes"][word, :n], alpha)
    if s["negative"]:
        out = ref_out_ns_two_pass if s.get("two_pass") and not s["sg"] and not s["hs"] \
            else ref_out_ns
        neu1e += out(h, a["syn1neg"], _targets(a, word, rng, s["negative"]), alpha)
    return neu1e


def ref_batch(a, ctx, targets, alpha):
    """The minibatched skip-gram update: every context row against the one target set, all
    gradients from the rows as they were before."""
    LOSS[1] += len(ctx)
    syn0, syn1neg = a["syn0"], a["syn1neg"]
    ins = [syn0[c].copy() for c in ctx]
    outs = [syn1neg[t].copy() for t in targets]
    g = np.zeros((len(ctx), len(targets)), np.float32)
    for j, h in enumerate(ins):
        for o, l2 in enumerate(outs):
            f = F(np.dot(h.astype(np.float64), l2.astype(np.float64)))
            if f == f:
                LOSS[0] += nll(f, o == 0)
            if -6 < f < 6:
                g[j, o] = ((F(1) if o == 0 else F(0)) - lookup(f)) * F(alpha)
    for j, c in enumerate(ctx):
        syn0[c] += sum((g[j, o] * outs[o] for o in range(len(outs))), np.zeros_like(ins[j]))
    for o, t in enumerate(targets):
        syn1neg[t] += sum((g[j, o] * ins[j] for j in range(len(ins))), np.zeros_like(outs[o]))


def ref_cbow_batch(a, centers, ctxs, noise, alpha, mean):
    """The minibatched CBOW update of consecutive centers (words `centers`, context words
    `ctxs`) sharing one list of noise words: each center's hidden vector (sum or mean of its
    context) against its own word (label 1) and every noise word but its own (label 0); all
    gradients from the rows as they were before the batch."""
    LOSS[1] += len(centers)
    syn0, syn1neg = a["syn0"], a["syn1neg"]
    hs, es, gs = [], [], []
    for ctx in ctxs:
        h = np.zeros(syn0.shape[1], np.float32)
        for c in ctx:
            h += syn0[c]
        if mean:
            h *= F(1.0) / F(len(ctx))
        hs.append(h)
    old = syn1neg.copy()
    for word, h, ctx in zip(centers, hs, ctxs):
        targets = [(word, 1)] + [(t, 0) for t in noise if t != word]
        e = np.zeros_like(h)
        g = []
        for t, label in targets:
            f = F(np.dot(h.astype(np.float64), old[t].astype(np.float64)))
            if f == f:
                LOSS[0] += nll(f, label)
            gt = (F(label) - lookup(f)) * F(alpha) if -6 < f < 6 else F(0)
            e += gt * old[t]
            g.append((t, gt))
        if not mean:
            e /= F(len(ctx))
        es.append(e)
        gs.append(g)
    for h, g in zip(hs, gs):
        for t, gt in g:
            syn1neg[t] += gt * h
    for ctx, e in zip(ctxs, es):
        for c in ctx:
            syn0[c] += e


def ref_train(a, s, ids, seed, alpha0, alpha1):
    """a: arrays dict (modified in place); s: dict sg/hs/negative/window/cbow_mean (and
    shrink_windows, batched, cbow_batch, two_pass)."""
    rng = SplitMix(seed)
    if not s["sg"] and s.get("batched"):
        return _ref_train_cbow_batched(a, s, ids, rng, alpha0, alpha1)
    LOSS[0], LOSS[1] = 0.0, 0
    trained = 0
    for alpha, sent in _sentences(a, ids, rng, alpha0, alpha1):
        trained += len(sent)
        for pos in range(len(sent)):
            span = s["window"]
            if s.get("shrink_windows", 1):
                span -= rng.next() % s["window"]
            lo, hi = max(pos - span, 0), min(pos + span + 1, len(sent))
            if s["sg"] and s.get("batched"):
                ctx = [sent[j] for j in range(lo, hi) if j != pos]
                if ctx:
                    ref_batch(a, ctx, _targets(a, sent[pos], rng, s["negative"]), alpha)
            elif s["sg"]:
                for j in range(lo, hi):
                    if j == pos:
                        continue
                    l1 = a["syn0"][sent[j]]
                    l1 += _output(a, s, sent[pos], l1.copy(), alpha, rng)
            else:
                ctx = [sent[j] for j in range(lo, hi) if j != pos]
                if not ctx:
                    continue
                neu1 = np.zeros(a["syn0"].shape[1], np.float32)
                for c in ctx:
                    neu1 += a["syn0"][c]
                if s["cbow_mean"]:
                    neu1 *= F(1.0) / F(len(ctx))
                neu1e = _output(a, s, sent[pos], neu1, alpha, rng)
                if not s["cbow_mean"]:
                    neu1e /= F(len(ctx))
                for c in ctx:
                    a["syn0"][c] += neu1e
    return trained


def _sentences(a, ids, rng, alpha0, alpha1):
    """(alpha, kept words) of each sentence, subsampling drawn as the kernel does."""
    n = len(ids)
    i = 0
    while i < n:
        alpha = F(alpha0) + (F(alpha1) - F(alpha0)) * (F(i) / F(n))
        sent = []
        while i < n and ids[i] >= 0:
            w = int(ids[i])
            i += 1
            thr = int(a["keep"][w])
            if thr != KEEP_ALWAYS and (rng.next() >> 32) >= thr:
                continue
            sent.append(w)
        i += 1
        yield alpha, sent


def _ref_train_cbow_batched(a, s, ids, rng, alpha0, alpha1):
    """CBOW batched: each sentence in batches of cbow_batch consecutive centers; per batch
    the window of each center (one draw each with shrink_windows), then `negative` noise
    words shared by the batch (only if some center has context)."""
    LOSS[0], LOSS[1] = 0.0, 0
    trained = 0
    bsize = s.get("cbow_batch", 4)
    for alpha, sent in _sentences(a, ids, rng, alpha0, alpha1):
        trained += len(sent)
        for pos0 in range(0, len(sent), bsize):
            centers, ctxs = [], []
            for pos in range(pos0, min(pos0 + bsize, len(sent))):
                span = s["window"]
                if s.get("shrink_windows", 1):
                    span -= rng.next() % s["window"]
                lo, hi = max(pos - span, 0), min(pos + span + 1, len(sent))
                ctx = [sent[j] for j in range(lo, hi) if j != pos]
                if ctx:
                    centers.append(sent[pos])
                    ctxs.append(ctx)
            if centers:
                noise = [_noise(a, rng) for _ in range(s["negative"])]
                ref_cbow_batch(a, centers, ctxs, noise, alpha, s["cbow_mean"])
    return trained
