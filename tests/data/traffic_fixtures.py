"""Helpers shared by the counting, sampling and buckets tests: a tiny traffic log and a tensor check."""

import torch


def assert_close(actual, expected, atol=1e-9, rtol=0.0):
    # torch.testing.assert_close costs seconds of lazy imports on its first call.
    actual, expected = actual.double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual, expected)


def rows(*records):
    """A log as ``iter_rows`` yields it: 1-based line numbers and raw dicts."""
    return list(enumerate(records, start=1))


def r(prompt, reference="ref", **extra):
    return {"prompt": prompt, "reference": reference, **extra}
