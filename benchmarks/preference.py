"""Benchmark: RL against a learned reward model, against ROUGE-L, and against the mix (protocol ``preference-v1``).

The RLHF pipeline on one bundled task with a real model, every stage rlft's own command:

1. SFT from the base model (one learning rate, the one the learning benchmark chose for this task
   on validation; early stopping on validation);
2. synthetic preference pairs from the SFT model's own samples on training prompts (``rlft rm
   pairs``), ordered by a *labeller* metric (``--labeller``, default chrF) with a tie margin: AI
   feedback, labelled as such in every row; no person judged them;
3. a Bradley-Terry reward model on those pairs (``rlft rm train``, LoRA, initialized from the SFT
   model), with held-out pairwise accuracy on pairs of unseen prompts;
4. RL from the SFT model at one setting and budget, with three rewards (``--arms``): the reward
   model alone, ROUGE-L alone, and the two standardized within each group and averaged;
5. the test split, scored once through ``protocol.TestLedger``, by every judge metric (ROUGE-L,
   chrF, BLEU, embedding similarity) and the reward model's own score, each arm against the SFT
   start with a paired bootstrap; the monitors (length ratio, truncation, repetition, copy rate);
6. the reward model's holes: on each test prompt, the SFT start's output and the arm's output
   form a pair; the reward model's agreement with the labeller on those pairs (the distribution
   RL moved to) against its held-out accuracy on the pairs it was built from, and the prompts where
   the reward model's score rose most while the labeller's fell.

No setting is chosen here (they are fixed in advance from the learning benchmark's validation
choice), so the validation split only stops SFT and checks the reward model. One seed: the CIs
are paired-bootstrap over test prompts and cover test sampling only, not training variation.

    python -m benchmarks.preference --work runs/bench-pref --threads 2 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rlft.atomic import atomic_write

from benchmarks import common
from benchmarks import protocol as P
from benchmarks.common import RESULTS, eval_model, log, num, rl_run, settings_of, summary

PROTOCOL = "preference-v1"
JUDGES = ("rouge_l", "chrf", "bleu", "embedding")
MONITORS = ("length", "length_ratio", "truncation_rate", "repetition", "copy_rate", "distinct_2")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="summarization")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--set", nargs="*", default=["data.template=chat", "lora.r=16"],
                   help="dotted model settings of every training run")
    p.add_argument("--work", default="runs/bench-pref")
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-rows", type=int, default=60)
    p.add_argument("--sft-lr", type=float, default=3e-4, help="learning-v2's validation choice for summarization")
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-max-steps", type=int, default=60)
    p.add_argument("--sft-eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--labeller", default="chrf", help="the reference metric that orders the synthetic pairs")
    p.add_argument("--pair-prompts", type=int, default=400, help="training prompts sampled for pairs")
    p.add_argument("--pair-group", type=int, default=4, help="samples per prompt")
    p.add_argument("--pairs-per-prompt", type=int, default=2)
    p.add_argument("--pair-margin", type=float, default=0.02, help="labeller scores closer than this: a tie")
    p.add_argument("--rm-lr", type=float, default=1e-4)
    p.add_argument("--rm-epochs", type=float, default=2.0)
    p.add_argument("--rm-batch", type=int, default=16)
    p.add_argument("--rl", default="rloo:1e-4:1.0:0.05", help="algo:lr:temperature:kl_coef (learning-v2's "
                   "validation choice for summarization SFT+RL)")
    p.add_argument("--rl-steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--arms", nargs="*", default=["rm=rm:{rm}", "rouge_l=rouge_l", "mix=0.5*rm:{rm} + 0.5*rouge_l"],
                   help="name=reward spec; {rm} is the reward model's directory")
    p.add_argument("--rescore-test", action="store_true")
    p.add_argument("--rescore-reason", default="")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Stages 1-4

def sft_stage(args: argparse.Namespace, root: Path, kw: dict[str, Any]) -> dict[str, Any]:
    base_val = eval_model(args.task, args.model, lambda s: s["validation"][: args.val_rows],
                          cache=root / "evals" / f"validation{args.val_rows}-base.json", tag="base-validation",
                          split="validation", eval_settings=_eval_settings(args), **kw)
    return common.sft_with_patience(
        args.task, args.model, root / "sft", base_val=base_val["metric"], val_n=args.val_rows,
        eval_every=args.sft_eval_every, patience=args.patience, max_steps=args.sft_max_steps, max_minutes=1e9,
        lr=args.sft_lr, batch_size=args.sft_batch, model_settings=settings_of(args.set), **kw)


def pairs_stage(args: argparse.Namespace, root: Path, start: str, kw: dict[str, Any]) -> dict[str, Any]:
    from rlft.training.preference_pairs import write_pairs

    out = root / "pairs.jsonl"
    if not out.is_file():
        settings = {**_eval_settings(args), "reward.spec": args.labeller, "rollout.group_size": args.pair_group,
                    "rollout.temperature": 1.0, "rollout.prompts_per_step": 8, "data.max_examples": args.pair_prompts,
                    "rm.pairs_per_prompt": args.pairs_per_prompt, "rm.pair_margin": args.pair_margin}
        t0 = time.perf_counter()
        line = write_pairs(common.make_config(args.task, start, root / "pairs-run", settings, **kw), out)
        log(f"pairs: {line} ({time.perf_counter() - t0:.0f} s)")
    from rlft.data.preferences import load_pairs

    pairs = load_pairs(str(out))
    return {"file": str(out), "pairs": len(pairs), "ties": sum(p.tie for p in pairs),
            "prompts": len({p.prompt for p in pairs}), "labeller": args.labeller, "synthetic": True,
            "annotator": pairs[0].annotator if pairs else None}


def rm_stage(args: argparse.Namespace, root: Path, start: str, pairs: dict[str, Any], kw: dict[str, Any]) -> dict:
    from rlft.config import load_config
    from rlft.training.reward_model import train_reward_model

    out = root / "rm"
    done = out / "eval" / "rm-test.json"
    if not done.is_file():
        config = load_config(None, base={
            "model.name_or_path": start, "data.train": pairs["file"], "data.validation_fraction": 0.1,
            "data.test_fraction": 0.15, "run.output_dir": str(out), "run.threads": kw["threads"],
            "run.precision": kw["precision"], "run.seed": kw["seed"], "run.progress": False, "run.tensorboard": False,
            "rm.batch_size": args.rm_batch, "rm.epochs": args.rm_epochs, "optim.lr": args.rm_lr, "lora.r": 16,
            "run.eval_every": 0, "run.save_every": 0, "eval.batch_size": 32})
        t0 = time.perf_counter()
        train_reward_model(config)
        log(f"reward model trained in {time.perf_counter() - t0:.0f} s")
    read = {s: json.loads((out / "eval" / f"rm-{s}.json").read_text(encoding="utf-8")) for s in ("validation", "test")}
    keep = ("accuracy", "ci_low", "ci_high", "n", "ties", "mean_margin", "ece")
    return {"dir": str(out / "final"), "lr": args.rm_lr, "epochs": args.rm_epochs, "batch": args.rm_batch,
            "lora_r": 16, "init": start, **{s: {k: v.get(k) for k in keep} for s, v in read.items()}}


def rl_stage(args: argparse.Namespace, root: Path, start: str, rm_dir: str, kw: dict[str, Any]) -> dict[str, dict]:
    algo, lr, temp, kl = args.rl.split(":")
    out = {}
    for arm in args.arms:
        name, spec = arm.split("=", 1)
        cand = {"algo": algo, "lr": float(lr), "temperature": float(temp), "kl_coef": float(kl),
                "reward": spec.replace("{rm}", rm_dir)}
        extra = {"reward.normalize_components": True} if "+" in spec else {}
        out[name] = rl_run(args.task, start, root / "rl" / name, cand, steps=args.rl_steps, prompts=args.prompts,
                           group=args.group, model_settings={**settings_of(args.set), **extra}, **kw)
        out[name]["normalize_components"] = bool(extra)
    return out


def _eval_settings(args: argparse.Namespace) -> dict[str, Any]:
    # evaluations and sampling load exported (merged) models: no fresh adapter on top
    return {k: v for k, v in settings_of(args.set).items() if not k.startswith("lora.")}


# ---------------------------------------------------------------------------------------------
# Stage 5-6: the test split, once, and what each judge says

def score_test(args: argparse.Namespace, root: Path, items: dict[str, dict], kw: dict[str, Any]) -> dict[str, Any]:
    """Every item's test evaluation, through the ledger (once per task, model and protocol)."""
    ledger = P.TestLedger(Path(args.results), task=args.task, model=args.model, protocol=PROTOCOL)
    test = ledger.score(items, lambda ident, item: eval_model(
        args.task, item["model_dir"], lambda splits: splits["test"],
        cache=root / "evals" / f"test-{ident}-{item['config_hash']}.json", tag=f"{ident}-test", split="test",
        eval_settings=_eval_settings(args), **kw), rescore=args.rescore_test, reason=args.rescore_reason)
    return {"results": test, "ledger": ledger.summary()}


def test_examples(args: argparse.Namespace, kw: dict[str, Any]) -> list:
    """The task's test split, as the evaluations read it (the task's defaults applied), without a model."""
    from rlft.data.splits import load_splits
    from rlft.training.setup import apply_task_defaults

    config = apply_task_defaults(common.make_config(args.task, args.model, args.work, _eval_settings(args), **kw))
    return load_splits(config.data, normalize=config.frequency.normalize)["test"]


def judge(test: dict[str, dict], examples: list, rm_dir: str) -> dict[str, Any]:
    """Per item: every judge metric and the raw reward-model score of each example."""
    from rlft.models.reward_model import load_reward_model, score_texts
    from rlft.rewards import METRICS

    by_id = {ex.id: ex for ex in examples}
    rm = load_reward_model(rm_dir)
    scores: dict[str, dict[str, list[float]]] = {}
    for ident, ev in test.items():
        exs = [by_id[i] for i in ev["ids"]]
        refs = [ex.references for ex in exs]
        scores[ident] = {m: METRICS[m].sentence(ev["outputs"], refs) for m in JUDGES}
        scores[ident]["rm_score"] = score_texts(rm, [ex.prompt for ex in exs], ev["outputs"], batch_size=16,
                                                max_length=512).tolist()
    return scores


def compare_arms(test: dict[str, dict], scores: dict[str, dict], examples: list, labeller: str, *,
                 margin: float, seed: int) -> dict[str, Any]:
    from rlft.eval.bootstrap import paired_bootstrap
    from rlft.eval.preference import wilson_interval

    by_id = {ex.id: ex for ex in examples}
    start = scores["sft"]
    spread = statistics.stdev(start["rm_score"])
    out = {}
    for arm, s in scores.items():
        if arm == "sft":
            continue
        deltas = {m: common.ci_record(paired_bootstrap(start[m], s[m], seed=seed)) for m in (*JUDGES, "rm_score")}
        # the reward model's holes: the start's and the arm's output of each test prompt as a pair
        agree, n, worst = 0, 0, []
        for i, ident in enumerate(test[arm]["ids"]):
            d_lab = (s[labeller][i] - start[labeller][i]) / 100.0
            d_rm = s["rm_score"][i] - start["rm_score"][i]
            if abs(d_lab) >= margin:
                n += 1
                agree += (d_lab > 0) == (d_rm > 0)
            if d_lab < 0 < d_rm:
                worst.append((d_rm / spread if spread else d_rm, d_lab, i, ident))
        low, high = wilson_interval(agree, n)
        worst.sort(reverse=True)
        out[arm] = {"deltas": deltas, "rm_score_gain_in_start_std": deltas["rm_score"]["delta"] / spread if spread else None,
                    "on_policy_pairs": {"n": n, "rm_agrees_with_labeller": agree / n if n else None,
                                        "ci_low": low, "ci_high": high},
                    "rm_up_labeller_down": sum(1 for w in worst if w[0] > 1.0 and w[1] < -0.05),
                    "examples": [_example(by_id[ident], test["sft"]["outputs"][i], test[arm]["outputs"][i], z, d)
                                 for z, d, i, ident in worst[:3]]}
    return out


def _example(ex: Any, before: str, after: str, z: float, d_lab: float) -> dict[str, Any]:
    return {"id": ex.id, "prompt": ex.prompt[:300], "reference": ex.references[0], "sft": before, "rl": after,
            "rm_gain_in_start_std": round(z, 2), "labeller_delta": round(100 * d_lab, 1)}


def _machine_line(m: dict[str, Any]) -> str:
    facts = m["at_start"]
    return (f"{facts.get('cpu')}, {m['threads']} threads, precision {m['precision']}, load average "
            f"{facts.get('load_average')} at start and {m.get('load_average_at_end')} at the end")


# ---------------------------------------------------------------------------------------------

def markdown(res: dict[str, Any]) -> str:
    rm, arms = res["reward_model"], res["arms"]
    lines = [f"# Preference benchmark ({res['protocol']}): {res['task']}, {res['model']}", "",
             f"Written by `{res['command']}` on {res['date']}; {res['test_ledger']['note']}.",
             f"Machine: {_machine_line(res['machine'])}.", "",
             f"Pairs: {res['pairs']['pairs']} synthetic pairs ({res['pairs']['ties']} ties) of the SFT model's own "
             f"samples for {res['pairs']['prompts']} training prompts, ordered by {res['pairs']['labeller']} "
             f"(annotator `{res['pairs']['annotator']}`; no person judged them).",
             f"Reward model: LoRA r=16 on the SFT model, lr {rm['lr']:g}, {rm['epochs']:g} epochs; held-out pairwise "
             f"accuracy validation {100 * rm['validation']['accuracy']:.1f}% "
             f"[{100 * rm['validation']['ci_low']:.1f}, {100 * rm['validation']['ci_high']:.1f}] "
             f"(n={rm['validation']['n']}), test {100 * rm['test']['accuracy']:.1f}% "
             f"[{100 * rm['test']['ci_low']:.1f}, {100 * rm['test']['ci_high']:.1f}] (n={rm['test']['n']}).",
             f"RL: {res['rl_setting']} from the SFT model, {res['budget']}; one seed ({res['seed']}).", "",
             "Test split (" + str(res["test_rows"]) + " rows), mean of each judge; in brackets the change "
             "against the SFT start with its paired-bootstrap 95% CI (* excludes 0):", "",
             "| model | reward trained on | " + " | ".join(JUDGES) + " | RM score (start std) |",
             "|---|---|" + "---:|" * (len(JUDGES) + 1)]
    lines.append("| SFT start | - | " + " | ".join(num(res["test"]["sft"][m]) for m in JUDGES) + " | 0 |")
    for arm, a in arms.items():
        cells = [f"{num(a['deltas'][m]['after'])} ({common.fmt_ci(a['deltas'][m])})" for m in JUDGES]
        lines.append(f"| RL: {arm} | `{res['rewards'][arm]}` | " + " | ".join(cells) +
                     f" | {num(a['rm_score_gain_in_start_std'])} |")
    lines += ["", "Monitors on the test split:", "", "| model | " + " | ".join(MONITORS) + " |",
              "|---|" + "---:|" * len(MONITORS)]
    for ident in ("sft", *arms):
        lines.append(f"| {ident} | " + " | ".join(num(res["monitors"][ident].get(m), 3) for m in MONITORS) + " |")
    lines += ["", f"Where the policy found the reward model's holes: on each test prompt the SFT start's and the "
              f"arm's outputs form a pair; the reward model's agreement with the labeller ({res['pairs']['labeller']}) "
              f"on the pairs the labeller separates by at least the tie margin, against its held-out accuracy "
              f"{100 * rm['test']['accuracy']:.1f}%:", "", "| arm | pairs | RM agrees | 95% CI | RM up >1 std while "
              f"{res['pairs']['labeller']} fell >5 |", "|---|---:|---:|---|---:|"]
    for arm, a in arms.items():
        o = a["on_policy_pairs"]
        lines.append(f"| {arm} | {o['n']} | {num(100 * o['rm_agrees_with_labeller'] if o['n'] else None, 1)}% | "
                     f"[{100 * o['ci_low']:.1f}, {100 * o['ci_high']:.1f}] | {a['rm_up_labeller_down']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    t0 = time.perf_counter()
    root = Path(args.work) / PROTOCOL / args.task
    kw = {"threads": args.threads, "precision": args.precision, "seed": args.seed}
    from rlft.training.runtime import machine_facts

    machine = {"precision": args.precision, "threads": args.threads, "at_start": machine_facts()}
    sft = sft_stage(args, root, kw)
    start = sft["best_dir"]
    pairs = pairs_stage(args, root, start, kw)
    rm = rm_stage(args, root, start, pairs, kw)
    rl = rl_stage(args, root, start, rm["dir"], kw)
    items = {"sft": {"model_dir": start, "config_hash": P.config_hash({"sft": sft["lr"], "step": sft["best_step"]}),
                     "candidate": None}}
    items |= {arm: {"model_dir": r["final_dir"], "candidate": r["candidate"],
                    "config_hash": P.config_hash({"arm": arm, "settings": r["settings"]})} for arm, r in rl.items()}
    scored = score_test(args, root, items, kw)
    examples = test_examples(args, kw)
    scores = judge(scored["results"], examples, rm["dir"])
    arms = compare_arms(scored["results"], scores, examples, args.labeller, margin=args.pair_margin, seed=args.seed)
    res = {"protocol": PROTOCOL, "task": args.task, "model": args.model, "date": common.utc_now(),
           "command": "python -m benchmarks.preference " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": machine | {"load_average_at_end": machine_facts()["load_average"]}, "seed": args.seed, "wall_s": round(time.perf_counter() - t0, 1),
           "sft": sft, "pairs": pairs, "reward_model": rm, "rl_setting": args.rl,
           "budget": f"{args.rl_steps} steps x {args.prompts} prompts x {args.group} samples",
           "rewards": {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args.arms},
           "rl_runs": rl, "test_rows": len(scored["results"]["sft"]["ids"]), "test_ledger": scored["ledger"],
           "test": {k: {m: sum(v) / len(v) for m, v in s.items()} for k, s in scores.items()},
           "monitors": {k: {m: ev.get(m, (ev.get("monitors") or {}).get(m)) for m in MONITORS}
                        for k, ev in scored["results"].items()},
           "summaries": {k: summary(ev) for k, ev in scored["results"].items()}, "arms": arms}
    common.write_json(Path(args.results) / f"{PROTOCOL}.json", res)
    atomic_write(Path(args.results) / f"{PROTOCOL}.md", markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
