"""Each estimator's docstring example runs and prints what it claims."""

import doctest

import pytest

import estimators.kmeans
import estimators.streaming


@pytest.mark.parametrize("module", [estimators.kmeans, estimators.streaming])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
