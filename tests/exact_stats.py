"""The bootstrap interval lmeval.compare estimates by resampling, computed exactly here, for the
tests of `compare` and of `compare --plot` over steps."""

from __future__ import annotations

import math
from collections import Counter


def exact_interval(differences: list[int], confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the bootstrap distribution of the mean of DIFFERENCES, exact:
    every multinomial draw of the distinct values, weighted by its probability. The draw
    probabilities at the two percentiles must be clear of them, or seeded resampling could
    land on either side (the scenario would be a bad one)."""
    n, counts = len(differences), Counter(differences)
    values = sorted(counts)
    distribution: Counter[float] = Counter()

    def draws(left: int, slots: int):
        if slots == 1:
            yield (left,)
            return
        for first in range(left + 1):
            for rest in draws(left - first, slots - 1):
                yield (first, *rest)

    for draw in draws(n, len(values)):
        probability = math.factorial(n)
        for value, k in zip(values, draw):
            probability *= (counts[value] / n) ** k / math.factorial(k)
        distribution[sum(value * k for value, k in zip(values, draw)) / n] += probability
    tail = (1 - confidence) / 2
    ends = []
    for q in (tail, 1 - tail):
        cumulative = 0.0
        for mean in sorted(distribution):
            below, cumulative = cumulative, cumulative + distribution[mean]
            if cumulative >= q:
                assert min(abs(below - q), abs(cumulative - q)) > 0.005, "a percentile sits on a step"
                ends.append(100 * mean)
                break
    return ends[0], ends[1]
