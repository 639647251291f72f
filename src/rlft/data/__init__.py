"""Prompt datasets: loading, templates, splits and traffic counts."""

from rlft.data.example import Example

__all__ = ["Example"]
