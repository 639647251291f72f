"""The ``rlft`` command. Every subcommand takes an optional YAML config and dotted overrides:

    rlft train examples/translation.yaml algo.name=rloo rollout.group_size=8

Imports are lazy: ``rlft --help`` loads neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, the function that runs it and the options of its own.
    ``settings``: it reads ``[CONFIG.yaml] [section.key=value ...]`` and its --help lists the run
    settings. The table of commands, ``COMMANDS``, follows the handlers at the end of this file."""

    help: str
    run: Callable[[argparse.Namespace], int]
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    settings: bool = True


def _parser() -> argparse.ArgumentParser:
    from rlft.config import help_text

    epilog = "settings (set in YAML or as section.key=value):\n" + help_text()
    parser = argparse.ArgumentParser(
        prog="rlft", description="Reinforcement-learning fine-tuning of Hugging Face language models.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        if not command.settings:
            command.options(sub.add_parser(name, help=command.help, description=command.help))
            continue
        p = sub.add_parser(name, help=command.help, description=command.help, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [section.key=value ...]",
                       help="an optional YAML config file, then dotted overrides")
        command.options(p)
    return parser


def _config(args: list[str], extra: list[str] | None = None) -> Any:
    from rlft.config import load_args

    return load_args([*args, *(extra or [])])


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; overrides may also follow options (`rlft eval --kl model.x=y`).

    argparse stops collecting the positional list at the first option, so settings after it
    come back as extras; they join the overrides in order, anything else is an error.
    """
    ns, extras = parser.parse_known_args(argv)
    stray = [e for e in extras if "=" not in e or e.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extras:
        ns.args = list(getattr(ns, "args", None) or []) + extras
    return ns


def main(argv: list[str] | None = None) -> int:
    from rlft.errors import RlftError

    parser = _parser()
    ns = _parse(parser, argv)
    if ns.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[ns.command].run(ns)
    except RlftError as err:
        print(f"rlft: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlft: interrupted; resume with run.resume=true", file=sys.stderr)
        return 130


def _resume_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="same as run.resume=true")


def _cmd_train(ns: argparse.Namespace) -> int:
    from rlft.training.loop import train

    config = _config(ns.args, ["run.resume=true"] if ns.resume else None)
    result = train(config)
    _print_final(result)
    return 0


def _cmd_sft(ns: argparse.Namespace) -> int:
    from rlft.training.sft import sft

    config = _config(ns.args, ["run.resume=true"] if ns.resume else None)
    result = sft(config)
    _print_final(result)
    return 0


def _print_final(result: Any) -> None:
    from rlft.training.distributed import is_main_process

    if not is_main_process():  # launched on many processes: rank 0 reports
        return
    last = result.evals[-1] if result.evals else None
    msg = f"done: {result.step} steps; model in {result.final_dir}"
    if last is not None:
        msg += f"; validation {last.metric_name} {last.metric:.2f}"
    if result.skipped_steps:
        msg += f"; {result.skipped_steps} steps skipped for bad rewards"
    print(msg)


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kl", action="store_true", help="also measure KL(model || starting model)")
    p.add_argument("--ref", help="the starting model for --kl (default: model.name_or_path of the run "
                                 "whose final/ or checkpoint is evaluated, from its config.yaml)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="score only the first N prompts of the split (default: all of them)")
    p.add_argument("--tag", default="eval", help="name of the eval/<tag>.json written to run.output_dir")


def _cmd_eval(ns: argparse.Namespace) -> int:
    from rlft.api import evaluate_model
    from rlft.errors import RlftError

    config = _config(ns.args)
    if ns.max_examples is not None and ns.max_examples < 1:
        raise RlftError(f"--max-examples must be >= 1, got {ns.max_examples}")
    result = evaluate_model(config, tag=ns.tag, with_kl=ns.kl or ns.ref is not None, ref=ns.ref,
                            max_examples=ns.max_examples)
    from rlft.training.distributed import is_main_process

    if not is_main_process():  # launched on many processes: rank 0 reports
        return 0
    rows = [("split", result.split), ("examples", result.n), (result.metric_name, result.metric),
            (result.second_metric_name, result.second_metric), ("reward", result.reward),
            ("kl", result.kl), ("length", result.length), ("truncation_rate", result.truncation_rate)]
    for key in ("traffic_weighted", "unweighted", "head", "torso", "tail", "seen", "unseen"):
        if result.strata.get(key) is not None:
            rows.append((key, result.strata[key]))
    for name, value in rows:
        print(f"{name:>18}  {value:.4g}" if isinstance(value, float) else f"{name:>18}  {value}")
    for s in result.samples:
        print(f"\n> {s['prompt']}\n= {s['reference']}\n< {s['output']}")
    if result.replay_eval is not None:
        from rlft.report import replay_table

        print("\n" + replay_table(result.replay_eval))
    return 0


def _generate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--input", help="a file with one prompt per line, or .jsonl with a prompt field")
    p.add_argument("--sample", type=int, default=0, help="draw N samples per prompt instead of greedy decoding")


def _cmd_generate(ns: argparse.Namespace) -> int:
    from rlft.api import generate
    from rlft.errors import RlftError

    prompts = list(ns.prompt)
    if ns.input:
        from pathlib import Path

        path = Path(ns.input)
        if not path.exists():
            raise RlftError(f"{path}: no such file")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    prompts.append(json.loads(line)["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise RlftError(f"{path}:{i}: field 'prompt': {err}") from None
            else:
                prompts.append(line)
    if not prompts:
        raise RlftError("generate: give --prompt TEXT or --input FILE")
    outputs = generate(_config(ns.args), prompts, greedy=ns.sample <= 0, samples=max(ns.sample, 1))
    for prompt, outs in zip(prompts, outputs):
        print(json.dumps({"prompt": prompt, "outputs": outs}, ensure_ascii=False))
    return 0


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a smaller run (for smoke tests)")
    p.add_argument("--base", action="store_true",
                   help="the bundled 6.9M-parameter rlft-base on en->zh translation instead of SmolLM2 (faster)")


def _cmd_demo(ns: argparse.Namespace) -> int:
    from rlft.demo import run_demo

    return run_demo(ns.args, quick=ns.quick, base=ns.base)


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=False, help="the run directory (default: run.output_dir)")


def _cmd_report(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from rlft.report import write_report

    run_dir = Path(ns.run_dir) if ns.run_dir else Path(_config(ns.args).run.output_dir)
    print(write_report(run_dir))
    return 0


def _cmd_tasks(ns: argparse.Namespace) -> int:
    from rlft.tasks import TASKS

    for name, task in TASKS.items():
        print(f"{name:<14} {task.language:<6} metric={task.metric:<8} reward={task.reward}  {task.description}")
    return 0


def _models_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "pull"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to pull (see the list)")


def _cmd_models(ns: argparse.Namespace) -> int:
    import time

    from rlft.errors import RlftError
    from rlft.models import registry

    if ns.action == "pull":
        if not ns.names:
            raise RlftError(f"models pull: name a model: {', '.join(registry.MODELS)}")
        for name in ns.names:
            start = time.perf_counter()
            print(f"{name}: {registry.pull(name)} ({time.perf_counter() - start:.0f} s)")
        return 0
    if ns.names:
        raise RlftError("models: `rlft models` takes no names; did you mean `rlft models pull NAME`?")
    for m in registry.MODELS.values():
        cached = f"cached in {registry.model_dir(m.name)}" if registry.is_cached(m.name) else "not cached"
        print(f"{m.name:<14} {m.package}=={m.version}  {m.licence}  {m.download_mb} MB download, "
              f"{m.disk_mb} MB converted  {cached}\n{'':<14} {m.description}")
    return 0


def _label_options(p: argparse.ArgumentParser) -> None:
    from rlft.label.commands import add_options

    add_options(p)


def _cmd_label(ns: argparse.Namespace) -> int:
    from rlft.label.commands import run

    def api_generate(*args: Any, **kwargs: Any) -> list[list[str]]:  # torch is imported for `sample` only
        from rlft.api import generate

        return generate(*args, **kwargs)

    return run(ns, api_generate)


def _cmd_config(ns: argparse.Namespace) -> int:
    import yaml

    from rlft.training.setup import apply_task_defaults

    print(yaml.safe_dump(apply_task_defaults(_config(ns.args)).to_dict(), sort_keys=False, allow_unicode=True))
    return 0


def _rm_options(p: argparse.ArgumentParser) -> None:
    from rlft.config import help_text

    epilog = "settings (set in YAML or as section.key=value):\n" + help_text()
    sub = p.add_subparsers(dest="rm_action", metavar="ACTION", required=True)
    for action, text in (("train", "Train a Bradley-Terry reward model on preference pairs (data.train: prompt, "
                                   "chosen, rejected; optional tie, margin, annotator)."),
                         ("pairs", "Write synthetic preference pairs (AI feedback): samples of model.name_or_path "
                                   "for data's prompts, ordered by the reference metric reward.spec.")):
        q = sub.add_parser(action, help=text, description=text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        q.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [section.key=value ...]",
                       help="an optional YAML config file, then dotted overrides")
        if action == "train":
            _resume_option(q)
        else:
            q.add_argument("--out", required=True, help="the preference JSONL file to write")


def _cmd_rm(ns: argparse.Namespace) -> int:
    if ns.rm_action == "pairs":
        from rlft.training.preference_pairs import write_pairs

        print(write_pairs(_config(ns.args), ns.out))
        return 0
    from rlft.training.reward_model import train_reward_model

    result = train_reward_model(_config(ns.args, ["run.resume=true"] if ns.resume else None))
    print(f"done: {result.step} steps; reward model in {result.final_dir}")
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command("RL fine-tuning (REINFORCE, SCST, RLOO, GRPO) of a model on a prompt dataset.",
                     _cmd_train, _resume_option),
    "sft": Command("Supervised fine-tuning on the same data (the baseline RL is compared with, and its warm start).",
                   _cmd_sft, _resume_option),
    "eval": Command("Greedy-decode a split and report the task metric, reward, length and truncation.",
                    _cmd_eval, _eval_options),
    "generate": Command("Generate completions for prompts given on the command line or in a file.",
                        _cmd_generate, _generate_options),
    "demo": Command("The end-to-end demo: RL on SmolLM2-135M-Instruct (LoRA) for man-page summarization, "
                    "before/after table and report.", _cmd_demo, _demo_options),
    "report": Command("Write the HTML report (plots, before/after table) of a run directory.",
                      _cmd_report, _report_options),
    "tasks": Command("List the bundled tasks.", _cmd_tasks),
    "label": Command("Preference labeling web app: `rlft label serve`, `add-annotator`, `export` (preference JSONL), "
                     "`sample` (candidate pairs from models).", _cmd_label, _label_options, settings=False),
    "models": Command("List the models rlft can obtain offline by name; `rlft models pull NAME` fetches and "
                      "converts one ahead of time.", _cmd_models, _models_options, settings=False),
    "config": Command("Print the fully resolved config (YAML) for a config file and overrides.", _cmd_config),
    "rm": Command("Reward models: `rlft rm train` on preference pairs, `rlft rm pairs` writes synthetic pairs "
                  "(the `rm:PATH` reward uses the result).", _cmd_rm, _rm_options, settings=False),
}


if __name__ == "__main__":
    sys.exit(main())
