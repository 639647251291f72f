"""Each choice setting's values are declared once (a Literal type in rlft.config.schema or
rlft.algorithms.loss_settings, or a registry's keys); validation, --help, the docs and the modules that
dispatch on the setting read that declaration. These tests fail when a copy reappears or drifts."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from rlft.config import Config, all_keys, choices, config_markdown, help_text, load_config
from rlft.errors import RlftError

SRC = Path(__file__).resolve().parents[1] / "src" / "rlft"
CHOICE_KEYS = [k for k in all_keys() if choices(k)]
# Where the lists are declared: the Literal types, and the tables whose keys are the choices.
DECLARATIONS = {SRC / "config" / "schema.py", SRC / "algorithms" / "registry.py", SRC / "algorithms" / "loss_settings.py"}


def test_the_choice_settings():
    assert CHOICE_KEYS == ["model.kind", "data.overlong", "rollout.engine", "reward.cjk", "algo.name", "algo.kl_mode",
                           "algo.kl_estimator", "algo.loss_norm", "frequency.mode", "optim.schedule", "run.precision",
                           "rm.ties"]
    default = Config()
    for key in CHOICE_KEYS:
        section, name = key.split(".")
        assert getattr(getattr(default, section), name) in choices(key), key


def _string_collections(tree: ast.AST):
    """Every tuple/list/set literal of two or more strings, and every dict's string keys."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) == len(node.elts) >= 2:
                yield node.lineno, frozenset(values)
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(keys) == len(node.keys) >= 2:
                yield node.lineno, frozenset(keys)


# Not copies: a dispatch table mapping each choice to what it does, and another setting that
# happens to use the same words.
ALLOWED = {("models/loading.py", frozenset({"auto", "causal", "seq2seq"})),   # model.kind -> is_seq2seq
           ("env.py", frozenset({"token", "sequence"})),                     # TextGenEnv's action mode
           ("algorithms/preference.py", frozenset({"davidson", "rao_kupper"})),  # rm.ties -> its tie model
           ("rollout/__init__.py", frozenset({"plain", "vllm"}))}                # rollout.engine -> its sampler


def test_no_module_repeats_a_choice_list():
    lists = {frozenset(choices(k)): k for k in CHOICE_KEYS if len(choices(k)) >= 2}
    copies = []
    for path in sorted(SRC.rglob("*.py")):
        if path in DECLARATIONS:
            continue
        for line, values in _string_collections(ast.parse(path.read_text(encoding="utf-8"))):
            where = str(path.relative_to(SRC))
            if values in lists and (where, values) not in ALLOWED:
                copies.append(f"{where}:{line} repeats {lists[values]}")
    assert not copies, copies


def test_help_and_docs_list_each_settings_choices_from_the_declaration():
    text, markdown = help_text(), config_markdown()
    for key in CHOICE_KEYS:
        line = f"Must be one of {', '.join(choices(key))}."
        assert line in text.split(f"\n  {key}=")[1].split("\n  ")[1], key  # the line under the key
        assert line in next(row for row in markdown.splitlines() if row.startswith(f"| `{key}`")), key


def test_each_choice_is_explained_in_its_help():
    for key in CHOICE_KEYS:
        if key == "algo.name":  # a registry a user extends: its list is the generated line alone
            continue
        section, name = key.split(".")
        prose = next(f for f in dataclasses.fields(getattr(Config(), section)) if f.name == name).metadata["help"]
        assert all(f"'{c}'" in prose for c in choices(key)), key


@pytest.mark.parametrize("key", CHOICE_KEYS)
def test_validation_refuses_a_value_outside_the_choices(key):
    with pytest.raises(RlftError, match=f"^config: {key}"):
        load_config(None, [f"{key}=nonesuch"])
    section, name = key.split(".")
    with pytest.raises(RlftError, match=f"'{key}' expects str"):
        load_config(None, base={section: {name: {"a": 1}}})


# --- every declared choice is dispatchable by its module, and nothing else is -------------------

def test_algorithm_and_loss_choices_dispatch():
    from rlft.algorithms import ALGORITHMS, KL_MODE_ESTIMATORS, aggregate, kl_penalty

    assert choices("algo.name") == tuple(ALGORITHMS)
    assert set(KL_MODE_ESTIMATORS) == set(choices("algo.kl_mode"))
    assert {e for es in KL_MODE_ESTIMATORS.values() for e in es} == set(choices("algo.kl_estimator"))
    lp, ref, mask = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]]), torch.ones(1, 2)
    values = {e: kl_penalty(lp, ref, e) for e in choices("algo.kl_estimator")}
    assert len({tuple(v.flatten().tolist()) for v in values.values()}) == len(values)  # each its own estimator
    with pytest.raises(ValueError, match="expected one of k1, k2, k3"):
        kl_penalty(lp, ref, "k4")
    for norm in choices("algo.loss_norm"):
        assert math.isfinite(float(aggregate(lp, mask, norm)))
    with pytest.raises(ValueError, match="expected one of token, sequence"):
        aggregate(lp, mask, "batch")


def test_engine_choices_are_the_sampler_registry():
    from rlft.rollout import ENGINES

    assert set(ENGINES) == set(choices("rollout.engine"))


def test_schedule_choices_dispatch():
    from rlft.training.optim import build_scheduler, lr_factor

    curves = {s: tuple(lr_factor(t, warmup_steps=0, total_steps=4, schedule=s) for t in range(4))
              for s in choices("optim.schedule")}
    assert len(set(curves.values())) == len(curves)  # each choice is its own schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    bad = dataclasses.replace(Config().optim, schedule="step")
    with pytest.raises(RlftError, match=r"^config: optim.schedule='step' is not one of constant, linear, cosine$"):
        build_scheduler(opt, bad, 4)


def test_precision_overlong_and_cjk_choices_dispatch():
    from rlft.data.templates import fit_prompt
    from rlft.rewards.text import use_cjk
    from rlft.training.runtime import resolved_precision

    cpu = torch.device("cpu")
    assert {resolved_precision(cpu, p) for p in choices("run.precision") if p != "auto"} == {"fp32", "bf16"}
    with pytest.raises(RlftError, match="run.precision='fp16' is not one of auto, fp32, bf16"):
        resolved_precision(cpu, "fp16")

    def tokenizer(text, add_special_tokens=True):
        return {"input_ids": list(range(len(text.split())))}

    for overlong in choices("data.overlong"):
        assert fit_prompt("a b", tokenizer, 4, overlong, "p") == [0, 1]
    with pytest.raises(RlftError, match="data.overlong='cut' is not one of truncate, reject"):
        fit_prompt("a b", tokenizer, 4, "cut", "p")
    assert {c: use_cjk(["你好"], c) for c in choices("reward.cjk")} == {"auto": True, "always": True, "never": False}
    with pytest.raises(RlftError, match="must be one of auto, always, never"):
        use_cjk(["x"], "sometimes")
