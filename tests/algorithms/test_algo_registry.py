"""Each algorithm declares its needs once (rlft.algorithms.registry); config's checks and the
algorithm's own tensor code agree with that declaration."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlft.algorithms import ALGORITHMS, Algorithm, reinforce, setting_range
from rlft.config import Config, load_config
from rlft.config.schema import _interval
from rlft.errors import RlftError


def _advantages(algo: Algorithm, group_size: int, greedy: bool) -> torch.Tensor:
    rewards = torch.arange(2.0 * group_size).reshape(2, group_size)  # (B, G)
    return algo.advantages(rewards, greedy_rewards=torch.zeros(2) if greedy else None, state={},
                           baseline_momentum=0.5, scale_rewards=True)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_declared_min_group_size_is_the_one_the_tensor_code_takes(name):
    algo = ALGORITHMS[name]
    assert _advantages(algo, algo.min_group_size, greedy=True).shape == (2, algo.min_group_size)
    if algo.min_group_size > 1:
        with pytest.raises(ValueError, match="at least 2 samples"):
            _advantages(algo, algo.min_group_size - 1, greedy=True)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_declared_greedy_need_is_the_one_the_tensor_code_has(name):
    algo = ALGORITHMS[name]
    if algo.needs_greedy:
        with pytest.raises(ValueError, match="greedy_rewards"):
            _advantages(algo, max(2, algo.min_group_size), greedy=False)
    else:
        _advantages(algo, max(2, algo.min_group_size), greedy=False)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_config_checks_each_algorithm_against_its_declaration(name):
    algo = ALGORITHMS[name]
    base = [f"algo.name={name}", "rollout.prompts_per_step=2"]
    if algo.min_group_size > 1:
        with pytest.raises(RlftError, match=f"^config: algo.name={name} needs rollout.group_size >= "
                                            f"{algo.min_group_size} "):
            load_config(None, base + [f"rollout.group_size={algo.min_group_size - 1}"])
    assert load_config(None, base + [f"rollout.group_size={algo.min_group_size}"]).algo.name == name
    normalized = base + ["rollout.group_size=2", "reward.normalize_components=true"]
    if algo.needs_greedy:
        with pytest.raises(RlftError, match=f"normalize_components does not apply to algo.name={name} "):
            load_config(None, normalized)
    else:
        assert load_config(None, normalized).reward.normalize_components


def test_config_reads_a_users_algorithm_from_the_registry(monkeypatch):
    # validate names no algorithm: a new entry is a valid algo.name with its own needs checked
    mine = dataclasses.replace(ALGORITHMS["rloo"], name="mine", min_group_size=3)
    monkeypatch.setitem(ALGORITHMS, "mine", mine)
    with pytest.raises(RlftError, match="algo.name=mine needs rollout.group_size >= 3"):
        load_config(None, ["algo.name=mine", "rollout.group_size=2"])
    assert load_config(None, ["algo.name=mine", "rollout.group_size=3"]).algo.name == "mine"


def test_declared_setting_ranges_are_the_config_ranges():
    declared = {key: a.bounds[key] for a in ALGORITHMS.values() for key in a.bounds}
    assert declared == {"baseline_momentum": "[0, 1)", "clip_eps": "(0, 1]", "gamma": "[0, 1]", "lam": "[0, 1]",
                        "vf_coef": "[0, inf)", "cliprange_value": "(0, inf)"}
    algo_fields = {f.name: f for f in dataclasses.fields(Config().algo)}
    for key, text in declared.items():
        assert setting_range(key) == text
        assert algo_fields[key].metadata["range"] == _interval(text), key
    # the algorithm's own precondition is the declared interval: [0, 1) for the momentum
    reinforce.advantages(torch.ones(1, 2), None, 0.0)
    with pytest.raises(ValueError, match="momentum"):
        reinforce.advantages(torch.ones(1, 2), None, 1.0)
    with pytest.raises(RlftError, match=r"algo.baseline_momentum must be in \[0, 1\)"):
        load_config(None, ["algo.baseline_momentum=1"])
    with pytest.raises(RlftError, match=r"algo.clip_eps must be in \(0, 1\]"):
        load_config(None, ["algo.clip_eps=0"])


def test_importing_the_registry_loads_no_torch():
    import subprocess
    import sys

    code = "import sys; import rlft.algorithms, rlft.config; rlft.config.help_text(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
