"""Shared fixtures: a tiny dataset on disk and a base config for tiny end-to-end runs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# run.precision=auto measures this CPU once and caches the result; keep that cache out of $HOME.
os.environ.setdefault("RLFT_CACHE_DIR", tempfile.mkdtemp(prefix="rlft-test-cache-"))
torch.set_num_threads(1)

WORDS = "the cat sat on mat a dog ran in park hello world numbers reward policy".split()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_dataset(tmp_path) -> dict[str, str]:
    """Copy tasks: the reference is the prompt's words reversed; 3 files, disjoint prompts."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(60):
        n = 2 + int(torch.randint(0, 3, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)]
        rows.append({"prompt": " ".join(words) + f" {i}", "reference": " ".join(reversed(words)),
                     "count": 1 + (100 // (i + 1))})
    out = {}
    for name, part in (("train", rows[:40]), ("validation", rows[40:50]), ("test", rows[50:])):
        out[name] = str(write_jsonl(tmp_path / f"{name}.jsonl", part))
    return out


@pytest.fixture
def tiny_causal_dir(tmp_path) -> Path:
    from tests.tiny import tiny_causal

    return tiny_causal(tmp_path)


@pytest.fixture
def tiny_seq2seq_dir(tmp_path) -> Path:
    from tests.tiny import tiny_seq2seq

    return tiny_seq2seq(tmp_path)


def tiny_overrides(model_dir: Path, data: dict[str, str], out: Path, **extra: object) -> list[str]:
    base = {
        "model.name_or_path": str(model_dir), "data.train": data["train"], "data.validation": data["validation"],
        "data.test": data["test"], "data.template": "reverse: {prompt} =>", "reward.spec": "chrf",
        "rollout.prompts_per_step": 4, "rollout.group_size": 3, "rollout.max_new_tokens": 8,
        "run.steps": 3, "run.output_dir": str(out), "run.eval_every": 0, "run.save_every": 0,
        "run.progress": False, "run.tensorboard": False, "eval.max_examples": 4, "eval.batch_size": 4,
        "optim.lr": 1e-3, "run.device": "cpu", "data.max_prompt_tokens": 200,
        "run.precision": "fp32",  # 'auto' is machine-dependent (bf16 where this CPU is faster in it)
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """Tiny Llama, GPT-2 and T5 policies, loaded once per test module."""
    from rlft.config import ModelConfig
    from rlft.models import load_policy
    from tests.tiny import tiny_causal, tiny_seq2seq

    root = tmp_path_factory.mktemp("m")
    dirs = {"llama": tiny_causal(root), "gpt2": tiny_causal(root, arch="gpt2"), "seq2seq": tiny_seq2seq(root)}
    return {name: load_policy(ModelConfig(name_or_path=str(path)), device="cpu") for name, path in dirs.items()}


@pytest.fixture(scope="module")
def causal(policies):
    return policies["llama"]
