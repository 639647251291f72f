"""`rlft demo --quick` runs end to end on tiny models: the default profile (a chat model with LoRA on
summarization; the real demo uses SmolLM2-135M-Instruct) and `--base` (rlft-base on translation)."""

from __future__ import annotations

import json


def test_demo_base_quick_writes_table_and_report(tmp_path, tiny_causal_dir, capsys):
    from rlft.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--base", "--quick", f"model.name_or_path={tiny_causal_dir}", f"run.output_dir={out}",
                 "run.precision=fp32", "run.threads=1", "rollout.max_new_tokens=8", "eval.max_new_tokens=8"]) == 0
    text = capsys.readouterr().out
    assert "before vs after on 8 test examples" in text
    assert "95% CI" in text and ("no significant change" in text or "improved" in text or "worse" in text)
    # traffic: the bucket table or the line saying why there is none, then the replay of 8 requests
    assert "No traffic-bucket table" in text or "by traffic bucket" in text
    assert "replay of 8 future requests" in text and "exact-match cache" in text
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary  # the numbers behind the table
    before = json.loads((out / "eval" / "before.json").read_text())
    after = json.loads((out / "eval" / "after.json").read_text())
    assert before["ids"] == after["ids"] and before["split"] == "test"
    assert after["kl"] is not None and after["kl"] >= 0


def test_demo_default_profile_is_a_chat_model_with_lora(tmp_path, capsys):
    from rlft.cli import main
    from rlft.config import load_config
    from rlft.demo import profile_settings
    from tests.tiny import tiny_causal

    settings = profile_settings()
    assert settings["model.name_or_path"] == "smollm2-135m" and settings["lora.r"] > 0
    assert profile_settings(base=True)["model.name_or_path"] == "rlft-base"
    for profile in (settings, profile_settings(base=True)):  # every key is a valid, in-range setting
        load_config(None, [f"{k}={v}" for k, v in profile.items()])
    out = tmp_path / "demo"
    model = tiny_causal(tmp_path, chat=True)
    assert main(["demo", "--quick", f"model.name_or_path={model}", f"run.output_dir={out}",
                 "run.precision=fp32", "run.threads=1", "rollout.max_new_tokens=8", "eval.max_new_tokens=8"]) == 0
    text = capsys.readouterr().out
    assert "summarization task" in text and "before vs after on 8 test examples" in text
    # LoRA: final/ is the merged model with the adapter beside it; the demo's figures are in demo.json
    assert (out / "final" / "config.json").is_file() and (out / "final" / "adapter").is_dir()
    figures = json.loads((out / "demo.json").read_text())
    assert figures["test_rows"] == 8 and figures["metric_name"] == "rouge_l"
    assert figures["ci"][0] <= figures["delta"] <= figures["ci"][1]
    assert "avx512_bf16" in figures["machine"] and figures["seconds"] > 0


def test_demo_profile_sits_under_the_users_file_and_overrides(tmp_path):
    # The profile is a base: the user's YAML file wins over it (it lost before: the profile came in as
    # overrides), the overrides win over both, and the task's defaults fill in only what none gives.
    from rlft.config import explicit_keys
    from rlft.demo import QUICK, demo_config
    from rlft.training.setup import apply_task_defaults

    path = tmp_path / "mine.yaml"
    path.write_text("rollout:\n  group_size: 6\nrun:\n  steps: 9\n")
    config = demo_config([str(path), "run.steps=3"], quick=True)
    assert config.rollout.group_size == 6 != QUICK["rollout.group_size"]   # the file over --quick's profile
    assert config.run.steps == 3                                            # the command line over the file
    assert config.model.name_or_path == "smollm2-135m" and config.lora.r == 16  # the profile where no one else
    assert {"lora.r", "data.template", "rollout.group_size"} <= explicit_keys(config)
    filled = apply_task_defaults(config)
    assert filled.data.template == "chat" and filled.eval.metric == "rouge_l"  # the profile's, then the task's
