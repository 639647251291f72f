"""Config: YAML + dotted overrides, validation, nearest-key suggestions, generated help."""

from __future__ import annotations

import pytest

from rlft.config import Config, all_keys, help_text, load_config, parse_overrides, with_overrides
from rlft.errors import RlftError


def test_defaults_and_overrides_layer(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algo:\n  name: grpo\nrollout:\n  group_size: 6\n")
    cfg = load_config(path, ["rollout.group_size=8", "optim.lr=3e-4", "run.resume=true"])
    assert cfg.algo.name == "grpo"               # from the file
    assert cfg.rollout.group_size == 8           # the command line wins over the file
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.run.resume is True
    assert cfg.rollout.temperature == Config().rollout.temperature  # untouched default


def test_unknown_key_suggests_nearest(tmp_path):
    with pytest.raises(RlftError, match=r"unknown config key 'rollout.group_sise'; did you mean 'rollout.group_size'"):
        load_config(None, ["rollout.group_sise=4"])
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(RlftError, match=r"bad.yaml: unknown config key 'optim.learning_rate'"):
        load_config(path)
    with pytest.raises(RlftError, match=r"did you mean 'rollout.group_size'"):
        load_config(None, ["group_size=4"])


def test_type_and_choice_errors(tmp_path):
    with pytest.raises(RlftError, match=r"'rollout.group_size' expects int, got 'many'"):
        load_config(None, ["rollout.group_size=many"])
    with pytest.raises(RlftError, match=r"expects int, got 2.5"):
        load_config(None, ["rollout.group_size=2.5"])
    with pytest.raises(RlftError, match=r"algo.kl_estimator='k4' is not one of k1, k2, k3"):
        load_config(None, ["algo.kl_estimator=k4"])
    with pytest.raises(RlftError, match=r"algo.kl_estimator='k1' does not fit algo.kl_mode='loss'"):
        load_config(None, ["algo.kl_mode=loss", "algo.kl_estimator=k1"])
    with pytest.raises(RlftError, match=r"algo.kl_estimator='k3' does not fit algo.kl_mode='reward'"):
        load_config(None, ["algo.kl_estimator=k3"])
    assert load_config(None, ["algo.kl_mode=loss", "algo.kl_estimator=k2"]).algo.kl_mode == "loss"
    with pytest.raises(RlftError, match=r"unknown algorithm 'rlooo'.*did you mean 'rloo'"):
        load_config(None, ["algo.name=rlooo"])
    with pytest.raises(RlftError, match=r"needs rollout.group_size >= 2"):
        load_config(None, ["algo.name=grpo", "rollout.group_size=1"])
    path = tmp_path / "broken.yaml"
    path.write_text("algo: [unclosed\n")
    with pytest.raises(RlftError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(RlftError, match=r"does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_optional_fields_accept_null():
    cfg = load_config(None, ["run.threads=2", "eval.max_new_tokens=null"])
    assert cfg.run.threads == 2 and cfg.eval.max_new_tokens is None


def test_parse_overrides_nested():
    assert parse_overrides(["a.b=1", "a.c=x", "d=true"]) == {"a": {"b": 1, "c": "x"}, "d": True}
    with pytest.raises(RlftError):
        parse_overrides(["novalue"])


def test_with_overrides_and_frozen():
    cfg = with_overrides(Config(), run={"steps": 5})
    assert cfg.run.steps == 5 and Config().run.steps != 5
    with pytest.raises(Exception):
        cfg.run.steps = 7  # frozen


def test_help_lists_every_key_with_doc():
    text = help_text()
    for key in all_keys():
        assert key in text
    assert "Weight of the KL penalty" in text


def test_docs_config_md_is_in_sync():
    from pathlib import Path

    from rlft.config import config_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == config_markdown(), "run: python scripts/gen_config_docs.py"


def test_example_configs_load():
    from pathlib import Path

    from rlft.training.setup import apply_task_defaults

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        cfg = apply_task_defaults(load_config(path))
        assert cfg.run.output_dir.startswith("runs/")
        if cfg.data.task == "translation":
            assert cfg.reward.spec == "0.8*chrf + 0.2*placeholders" and cfg.data.train.endswith("train.jsonl.gz")


def test_override_values_with_braces_stay_text():
    # YAML would read 'Summarize: {prompt}' as a mapping; every setting is a scalar, so it is the text.
    cfg = load_config(None, ["data.instruction=Summarize: {prompt}", "data.template={prompt}"])
    assert cfg.data.instruction == "Summarize: {prompt}" and cfg.data.template == "{prompt}"


def test_explicit_settings_win_over_task_defaults_even_when_equal_to_the_default(tmp_path):
    from rlft.training.setup import apply_task_defaults

    assert Config().reward.spec == "chrf" and Config().rollout.max_new_tokens == 48
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  max_new_tokens: 48\n")
    cfg = apply_task_defaults(load_config(path, ["data.task=summarization", "reward.spec=chrf"]))
    assert cfg.reward.spec == "chrf"                 # given on the command line, equal to the default
    assert cfg.rollout.max_new_tokens == 48          # given in the file, equal to the default
    assert cfg.eval.metric == "rouge_l" and cfg.data.template == "Summarize: {prompt}\nSummary:"  # the task's
    # later copies keep what was explicit; applying the task again changes nothing
    again = apply_task_defaults(with_overrides(cfg, run={"steps": 5}))
    assert again == with_overrides(cfg, run={"steps": 5})
    assert apply_task_defaults(load_config(None, ["data.task=summarization"])).reward.spec == "rouge_l"


def test_chat_template_takes_the_tasks_instruction():
    from rlft.tasks import TASKS
    from rlft.training.setup import apply_task_defaults

    chat = apply_task_defaults(load_config(None, ["data.task=translation", "data.template=chat"]))
    assert chat.data.template == "chat" and chat.data.instruction == TASKS["translation"].instruction
    own = apply_task_defaults(load_config(None, ["data.task=translation", "data.template=chat",
                                                 "data.instruction=Into Chinese: {prompt}"]))
    assert own.data.instruction == "Into Chinese: {prompt}"
    plain = apply_task_defaults(load_config(None, ["data.task=translation"]))
    assert plain.data.template == TASKS["translation"].template  # base models keep the plain template


def test_normalize_components_needs_two_samples_per_step():
    with pytest.raises(RlftError, match="normalize_components needs at least 2 samples"):
        load_config(None, ["reward.normalize_components=true", "algo.name=reinforce", "rollout.group_size=1",
                           "rollout.prompts_per_step=1"])


def test_base_takes_dotted_or_nested_settings_under_the_file_and_overrides(tmp_path):
    from rlft.config import explicit_keys, load_args

    path = tmp_path / "c.yaml"
    path.write_text("run:\n  seed: 7\n")
    cfg = load_args([str(path), "run.steps=3"], base={"run.steps": 5, "run.seed": 2, "data": {"task": "translation"},
                                                      "rollout.group_size": 6})
    assert (cfg.run.steps, cfg.run.seed, cfg.data.task, cfg.rollout.group_size) == (3, 7, "translation", 6)
    assert {"data.task", "rollout.group_size"} <= explicit_keys(cfg)  # a base is given, not a task default
