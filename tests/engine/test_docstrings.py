"""Each model's docstring example runs and prints what it claims."""

import doctest

import pytest

import engine.kmeans
import engine.streaming


@pytest.mark.parametrize("module", [engine.kmeans, engine.streaming])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
