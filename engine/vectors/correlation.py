"""Pearson and Spearman correlations with their two-sided p-values, as scipy.stats computes
them (pearsonr, spearmanr), without needing scipy: word-pair evaluations report both."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

class Correlation(namedtuple("Correlation", "statistic pvalue")):
    """A correlation and its two-sided p-value; reads like scipy's PearsonRResult /
    SignificanceResult (r, p = result; result[0]; result.statistic; result.correlation)."""

    __slots__ = ()

    @property
    def correlation(self) -> float:
        return self.statistic


def rank(x) -> np.ndarray:
    """Ranks from 1, ties given the mean of their ranks (scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.concatenate(([True], xs[1:] != xs[:-1]))     # where each run of ties starts
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(x)) - 1
    group = np.cumsum(first) - 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends) / 2.0 + 1.0)[group]
    return ranks


def pearson(x, y) -> float:
    """Pearson's r (nan when either input is constant)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    if not denom:
        return float("nan")
    return max(-1.0, min(1.0, float((x * y).sum() / denom)))


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the ranks."""
    return pearson(rank(x), rank(y))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction
    (modified Lentz), on the side of x where the fraction converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(20_000):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return front * (f - 1.0)


def pvalue(r: float, n: int) -> float:
    """Two-sided p-value of a correlation r over n pairs (Student's t with n - 2 degrees of
    freedom, which is the exact null distribution of Pearson's r for normal data)."""
    if math.isnan(r) or n < 3:
        return float("nan")
    return _betainc((n - 2) / 2.0, 0.5, 1.0 - r * r)


def correlations(x, y) -> tuple[Correlation, Correlation]:
    """(Pearson, Spearman) of two equally long sequences of at least two numbers, each with
    its p-value, as scipy.stats.pearsonr / spearmanr return them: nan for constant input or
    any nan; with two pairs, Pearson's p is 1 and Spearman's is nan (as scipy)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    if np.isnan(x).any() or np.isnan(y).any():
        nan = float("nan")
        return Correlation(nan, nan), Correlation(nan, nan)
    r_p, r_s = pearson(x, y), spearman(x, y)
    p_p = 1.0 if n == 2 and not math.isnan(r_p) else pvalue(r_p, n)
    return Correlation(r_p, p_p), Correlation(r_s, pvalue(r_s, n))
