import pytest
from tests.report.report_fixtures import make_evals

from rlft.report.plots import plot_before_after, plot_curves, series, smooth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_smooth_keeps_constants_and_short_runs():
    assert smooth([3.0] * 200) == pytest.approx([3.0] * 200)
    assert smooth([1.0, 5.0, 2.0]) == [1.0, 5.0, 2.0]  # under 20 points: no smoothing
    noisy = [float(i % 2) for i in range(400)]
    assert max(smooth(noisy)[100:]) - min(smooth(noisy)[100:]) < 0.2  # the 0/1 zigzag is flattened


def test_series_skips_missing_and_other_splits():
    metrics = [{"step": 1, "split": "train", "kl": 0.1}, {"step": 2, "split": "train", "kl": None},
               {"step": 3, "split": "validation", "kl": 0.5}, {"step": 4, "split": "train", "kl": float("nan")},
               {"step": 5, "split": "train", "kl": 0.3}]
    assert series(metrics, "train", "kl") == ([1.0, 5.0], [0.1, 0.3])


def test_plots_write_valid_pngs_even_without_data(tmp_path):
    assert plot_curves([], tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
    metrics = [{"step": s, "split": "train", "reward": s * 0.1, "kl": 0.01} for s in range(50)]
    metrics.append({"step": 49, "split": "validation", "metric": 40.0})
    assert plot_curves(metrics, tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    before, after = make_evals()
    out = plot_before_after(before, after, tmp_path / "sub" / "ba.png", n_resamples=200)
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ba.png", "c.png", "empty.png", "sub"]
