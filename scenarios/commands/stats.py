"""Statistics the reports state: means with t confidence intervals, Welch's test.

Seeds are few (8 per algorithm), so the interval is Student's t on the sample standard
deviation (ddof = 1), and two algorithms are compared with Welch's t-test, which does
not assume equal variances. Both from scipy.stats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof = 1); NaN for one value."""
    ci95_low: float
    ci95_high: float


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and the t confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return Summary(n, mean, float("nan"), float("nan"), float("nan"))
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test that the two means are equal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test over seeds (the same seed has the same
    initialisation and training days in both cells), over the seeds where both values
    are finite (a run without a policy has none); NaN with fewer than two pairs."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.array(pairs).T
    if np.allclose(x, y):
        return 1.0
    return float(stats.ttest_rel(x, y).pvalue)


def fmt(x: float, spec: str = ",.0f") -> str:
    """A number in a report's table; "-" where there is none (NaN, inf)."""
    return "-" if not np.isfinite(x) else format(x, spec)


def band(frame, confidence: float = 0.95):
    """(mean, low, high) per row of a frame whose columns are seeds."""
    n = frame.shape[1]
    mean = frame.mean(axis=1)
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * frame.std(axis=1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half
