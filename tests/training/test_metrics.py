"""metrics.jsonl lines, resume truncation, TensorBoard events, resolved config."""

from __future__ import annotations

import json
import sys
import time
import warnings

import pytest
import torch

from rlft.errors import RlftError
from rlft.training import metrics as metrics_mod
from rlft.rundir import read_metrics
from rlft.training.metrics import MetricsLogger, save_resolved_config


def test_log_writes_strict_json_lines(tmp_path):
    before = time.time()
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, "train", {"reward": 0.5, "tokens": 12, "kl": float("nan"), "ratio": float("inf"),
                                "loss": torch.tensor(2.5), "reason": "ok", "missing": None})
        logger.log_text(1, "samples", "prompt\n-> output")
        # flushed per line: readable before close
        assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert "NaN" not in lines[0] and "Infinity" not in lines[0]
    first = json.loads(lines[0])
    assert list(first)[:3] == ["step", "split", "time"]
    assert before <= first.pop("time") <= time.time()
    assert first == {"step": 1, "split": "train", "reward": 0.5, "tokens": 12, "kl": None, "ratio": None,
                     "loss": 2.5, "reason": "ok", "missing": None}
    text = json.loads(lines[1])
    assert (text["split"], text["tag"], text["text"]) == ("text", "samples", "prompt\n-> output")
    assert [r["split"] for r in read_metrics(tmp_path)] == ["train", "text"]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", split="train")] == [1]


def test_reserved_and_non_scalar_values_are_rejected(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        with pytest.raises(ValueError, match="reserved"):
            logger.log(1, "train", {"step": 3})
        with pytest.raises(TypeError):
            logger.log(1, "train", {"rewards": [1.0, 2.0]})
    assert not (tmp_path / "metrics.jsonl").read_text()


def test_resume_drops_lines_after_the_checkpoint_step(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log(step, "train", {"reward": step / 10})
        logger.log_text(5, "samples", "late sample")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "split": "tr')  # torn by the crash
    with pytest.warns(RuntimeWarning, match="unreadable"):
        logger = MetricsLogger(tmp_path, tensorboard=False, resume_step=3)
    with logger:
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
        logger.log(4, "train", {"reward": 0.99})
    records = read_metrics(tmp_path)
    assert [(r["step"], r["reward"]) for r in records] == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.99)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_read_metrics_tolerates_only_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl')
    assert read_metrics(path) == [{"step": 1, "split": "train"}]
    path.write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 3, "split": "train"}\n')
    with pytest.raises(RlftError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)
    with pytest.raises(RlftError, match="does not exist"):
        read_metrics(tmp_path / "nope.jsonl")


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path) as logger:
        logger.log(1, "train", {"reward": 0.25, "reason": "text is not a scalar", "flag": True})
        logger.log(2, "train", {"reward": 0.75})
        logger.log(2, "validation", {"chrf": 41.0})
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["train/reward", "validation/chrf"]
    assert [(e.step, e.value) for e in acc.Scalars("train/reward")] == [(1, 0.25), (2, 0.75)]


def test_missing_tensorboard_warns_once_and_keeps_logging(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    monkeypatch.setattr(metrics_mod, "_tb_warned", False)
    with pytest.warns(RuntimeWarning, match="TensorBoard is not installed"):
        logger = MetricsLogger(tmp_path / "a")
    with logger:
        logger.log(1, "train", {"reward": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetricsLogger(tmp_path / "b").close()
    assert read_metrics(tmp_path / "a")[0]["reward"] == 1.0
    assert not (tmp_path / "a" / "tensorboard").exists()


def test_save_resolved_config_round_trips_in_field_order(tmp_path):
    import yaml

    from rlft.config import Config

    config = Config().to_dict()
    config["run"]["output_dir"] = str(tmp_path)
    path = save_resolved_config(tmp_path, config)
    assert path == tmp_path / "config.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded == config
    assert list(loaded) == list(config) and list(loaded["run"]) == list(config["run"])
    save_resolved_config(tmp_path, {"model": {"name_or_path": "other"}})
    assert yaml.safe_load(path.read_text()) == {"model": {"name_or_path": "other"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
