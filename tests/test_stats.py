import statistics

import pandas as pd
import pytest
from hypothesis import given, strategies as st

from contracts.stats import mean, median, percentile, quantile

finite = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50)


@given(finite, st.floats(0, 1))
def test_quantile_matches_pandas_linear(xs, q):
    assert quantile(xs, q) == pytest.approx(pd.Series(xs).quantile(q), rel=1e-9, abs=1e-6)


@given(finite)
def test_median_is_statistics_median(xs):
    assert median(xs) == statistics.median(xs)


def test_known_values_and_bad_input():
    assert percentile([1, 2, 3, 4], 25) == 1.75
    assert quantile([5], 0.9) == 5
    assert mean([1, 2]) == 1.5
    for bad in (lambda: quantile([], 0.5), lambda: mean([]), lambda: quantile([1], 1.5)):
        with pytest.raises(ValueError):
            bad()
