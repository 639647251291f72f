"""Many processes: the rank shares, the one-process identities, and real runs of 2 gloo processes.

The runs use top_k=1, so that a rollout is a function of the weights alone: each rank samples from
its own random stream, and with stochastic sampling two runs would agree only in distribution.
REINFORCE's running baseline, traffic-weighted loss weights, two minibatches per batch and a KL
penalty make every part of the update global: a rank that used only its own rows for any of them
would move the weights differently from one process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlft.errors import RlftError
from rlft.training.distributed import Dist, launched, rank_share
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
DDP_CONFIG = ROOT / "examples" / "accelerate" / "ddp.yaml"
# 1 vs 2 processes, measured: largest weight difference 3.9e-06 (REINFORCE) to 1.5e-05 (SFT), relative
# (||w2 - w1|| / ||w1 - w0||) 1.4e-06 to 1.1e-05, for runs that move weights by up to 0.01-0.1. The ranks
# sum gradients in another order, and AdamW's first steps are nearly sign(gradient), which turns
# rounding into steps of up to lr in weights whose gradient is ~0. A per-rank REINFORCE baseline (a
# real bug) gives 2.3e-04 and 2.0e-04; a per-rank SFT token count 0.044 and 0.13: both fail.
TOLERANCE = 1e-4   # largest weight difference
RELATIVE = 5e-5    # ||w2 - w1|| / ||w1 - w0||


def test_rank_shares_are_disjoint_cover_the_batch_and_follow_the_minibatches():
    shares = [rank_share(8, 2, r, minibatches=2).tolist() for r in range(2)]
    assert shares == [[0, 1, 4, 5], [2, 3, 6, 7]]  # rank r: slice r of minibatch 0, then of minibatch 1
    shares = [rank_share(12, 3, r).tolist() for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(12)) and shares[1] == [4, 5, 6, 7]
    assert rank_share(5, 1, 0, minibatches=2).tolist() == [0, 1, 2, 3, 4]  # one process: as before
    with pytest.raises(RlftError, match="multiple of the number of processes"):
        rank_share(6, 2, 0, minibatches=2)


def test_one_process_is_the_identity():
    dist = Dist("cpu")
    assert (dist.rank, dist.world, dist.is_main) == (0, 1, True)
    x, gen = torch.arange(6.0).view(3, 2), torch.Generator().manual_seed(0)
    assert dist.gather(x) is x and dist.mine(x, 3) is x and dist.sum(2.5) == 2.5
    assert dist.split([1, 2, 3]) == [1, 2, 3] and dist.first_error("bad") == "bad"
    assert dist.rollout_generator(gen, 0, 5) is gen
    row = {"reward": 0.5, "step_time": 1.0, "reason": "x"}
    assert dist.mean_metrics(row) == row
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert dist.prepare(model, optimizer) is optimizer and dist.forward(model) is model


def test_launched_reads_the_launchers_environment(monkeypatch):
    for name in ("WORLD_SIZE", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    assert not launched()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert launched()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched()


def test_importing_rlft_does_not_import_accelerate_or_torch_distributed_state():
    code = "import rlft, rlft.training.distributed, sys; print('accelerate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"),
                                        ("zero3", "DEEPSPEED")])
def test_example_accelerate_configs_load_and_hold_what_rlft_needs(name, kind):
    """accelerate reads each example; rlft's own autocast, and for DeepSpeed one micro-batch per
    optimizer step and the clipping of optim.max_grad_norm's default (the DDP one also starts: below)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from rlft.config import OptimConfig

    config = load_config_from_file(str(ROOT / "examples" / "accelerate" / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(kind) and config.mixed_precision == "no"
    if kind == "DEEPSPEED":
        ds = config.deepspeed_config
        assert ds["zero_stage"] == int(name[-1]) and ds["gradient_accumulation_steps"] == 1
        assert ds["gradient_clipping"] == OptimConfig().max_grad_norm
    if kind == "FSDP":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_reshard_after_forward"] is True and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"


# ---------------------------------------------------------------------------------------------
# Real runs: 2 gloo processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(pause: float = 0.0) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "RLFT_TEST_REWARD_PAUSE": str(pause)}
    env.pop("WORLD_SIZE", None)
    return env


def _overrides(model_dir: Path, data: dict[str, str], out: Path, **extra: object) -> list[str]:
    return tiny_overrides(model_dir, data, out, **{
        "algo.name": "reinforce", "algo.kl_coef": 0.05, "algo.minibatches": 2, "rollout.top_k": 1,
        "rollout.group_size": 2, "rollout.prompts_per_step": 4, "optim.lr": 1e-2, "run.threads": 1,
        "eval.max_examples": 4, "eval.batch_size": 2, "run.eval_every": 3, "run.save_every": 1,
        "reward.spec": "tests.training.slow_reward:slow_chrf", **extra})


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _relative(start: dict[str, torch.Tensor], a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||b - a|| / ||a - start|| over all weights: how far apart two runs end, relative to how far the
    training moved. Rounding moves a few weights (the max difference); a wrong share moves all."""
    keys = sorted(set(a) & set(start))
    apart = sum(float((b[k] - a[k]).double().pow(2).sum()) for k in keys) ** 0.5
    moved = sum(float((a[k] - start[k]).double().pow(2).sum()) for k in keys) ** 0.5
    return apart / moved


def _rows(run_dir: Path, split: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


def _checkpoints(run_dir: Path) -> list[int]:
    """The steps of the complete checkpoints from step 2 on."""
    root = run_dir / "checkpoints"
    found = [int(p.name.split("-")[1]) for p in root.glob("step-*") if (p / "COMPLETE").exists()] if root.is_dir() else []
    return sorted(s for s in found if s >= 2)


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> None:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]


def test_two_processes_under_the_example_ddp_config_update_as_one_process(tmp_path, tiny_causal_dir, tiny_dataset):
    """The example DDP config starts on CPU, and 2 processes give the weights, rewards and
    validation tables of 1 process at the same global batch."""
    from rlft.config import load_config
    from rlft.training.loop import train

    one = train(load_config(None, _overrides(tiny_causal_dir, tiny_dataset, tmp_path / "one"))).run_dir
    accelerate = Path(sys.executable).parent / "accelerate"
    _run([str(accelerate), "launch", "--config_file", str(DDP_CONFIG), "--num_processes", "2",
          "--main_process_port", str(_free_port()), "-m", "rlft", "train",
          *_overrides(tiny_causal_dir, tiny_dataset, tmp_path / "two")], _env())
    two = tmp_path / "two"
    start, w1, w2 = _weights(tiny_causal_dir), _weights(one / "final"), _weights(two / "final")
    moved, diff, rel = _max_diff(start, w1), _max_diff(w1, w2), _relative(start, w1, w2)
    print(f"1 vs 2 processes: largest weight difference {diff:.3g} (moved up to {moved:.3g}), relative {rel:.3g}")
    assert moved > 1e-3 and diff <= TOLERANCE and rel <= RELATIVE
    train1, train2 = _rows(one, "train"), _rows(two, "train")
    assert [r["step"] for r in train2] == [1, 2, 3]  # rank 0 alone writes the log: one line per step
    for a, b in zip(train1, train2):
        assert b["reward"] == pytest.approx(a["reward"], abs=1e-6)
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-5) and b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # AdamW would hide a gradient's scale
    val1, val2 = _rows(one, "validation"), _rows(two, "validation")
    keys = ("metric", "corpus_metric", "reward", "length", "traffic_weighted", "unweighted", "head", "tail")
    assert [r["step"] for r in val2] == [0, 3]
    for a, b in zip(val1, val2):  # evaluation sharded by batch and gathered in order: the same table
        assert {k: b.get(k) for k in keys} == pytest.approx({k: a.get(k) for k in keys}, abs=1e-6)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == sorted(p.name for p in (one / "checkpoints").iterdir())


def test_rlft_eval_on_two_processes_writes_the_one_process_result(tmp_path, tiny_causal_dir, tiny_dataset):
    """`rlft eval` sharded by batch over 2 processes: the same outputs, per-example scores, KL and
    bucketed tables as 1 process, written once."""
    from rlft.api import evaluate_model
    from rlft.config import load_config
    from tests.tiny import tiny_causal

    ref = str(tiny_causal(tmp_path / "ref", seed=1))  # another model: a KL that is not 0

    def args(out):  # the training split: prompts in every traffic bucket
        return tiny_overrides(tiny_causal_dir, tiny_dataset, out, **{"eval.split": "train", "eval.batch_size": 3,
                                                                     "run.threads": 1})

    evaluate_model(load_config(None, args(tmp_path / "one")), tag="t", with_kl=True, ref=ref, max_examples=10)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          "-m", "rlft", "eval", *args(tmp_path / "two"), "--tag", "t", "--ref", ref, "--max-examples", "10"], _env())
    one, two = (json.loads((tmp_path / run / "eval" / "t.json").read_text()) for run in ("one", "two"))
    assert one.keys() == two.keys() and len(one["outputs"]) == 10  # 4 batches of 3, 3, 3, 1 over 2 ranks
    assert one["kl"] > 0.01 and {"head", "torso"} <= set(one["buckets"]) and one["torso"] is not None
    for key in one:
        if key not in ("time", "tag"):
            assert two[key] == pytest.approx(one[key], abs=1e-6) if isinstance(one[key], float) else two[key] == one[key], key


def _pairs(path: Path) -> Path:
    """Preference pairs: the chosen completion ends in 'hello', the rejected one does not; some ties."""
    from tests.conftest import WORDS, write_jsonl

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(40):
        body = " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (3,), generator=g))
        rows.append({"prompt": f"{WORDS[i % len(WORDS)]} {i}", "chosen": body + " hello", "rejected": body,
                     **({"tie": True, "rejected": body + " world"} if i % 7 == 3 else {})})
    return write_jsonl(path, rows)


def _loop_case(loop: str, model: Path, data: dict[str, str], tmp: Path, out: Path) -> tuple[list[str], object]:
    """The command words and the in-process function of ``loop``, writing to ``out``."""
    from rlft.training.loop import train
    from rlft.training.reward_model import train_reward_model
    from rlft.training.sft import sft

    if loop == "ppo":  # per-token advantages: values, KL and masks gathered, whitened over the global batch
        return ["train", *_overrides(model, data, out, **{"algo.name": "ppo", "algo.updates_per_batch": 2,
                                                          "run.eval_every": 0})], train
    if loop == "lora":  # only the adapter trains; final/ is the merged model
        return ["train", *_overrides(model, data, out, **{"lora.r": 4, "run.eval_every": 0})], train
    if loop == "sft":
        return ["sft", *tiny_overrides(model, data, out, **{"sft.batch_size": 4, "optim.lr": 1e-2, "run.threads": 1,
                                                            "optim.grad_accum": 2})], sft
    pairs = _pairs(tmp / "pairs.jsonl")
    args = [f"{k}={v}" for k, v in {
        "model.name_or_path": model, "data.train": pairs, "run.output_dir": out, "data.validation_fraction": 0.25,
        "data.test_fraction": 0.1, "rm.batch_size": 8, "run.steps": 3, "optim.lr": 3e-3, "run.eval_every": 0,
        "run.save_every": 0, "run.progress": False, "run.tensorboard": False, "run.device": "cpu",
        "run.precision": "fp32", "rm.max_length": 64, "run.threads": 1}.items()]
    return ["rm", "train", *args], train_reward_model


@pytest.mark.parametrize("loop", ["ppo", "lora", "sft", "rm"])
def test_two_processes_match_one_in_every_loop(tmp_path, tiny_causal_dir, tiny_dataset, loop):
    """PPO (per-token advantages), LoRA, SFT and reward-model training: 2 torchrun processes
    end with the weights of 1 process (and PPO's value head, the reward model's scalar head)."""
    from rlft.config import load_config

    words, fn = _loop_case(loop, tiny_causal_dir, tiny_dataset, tmp_path, tmp_path / "two")
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
          "-m", "rlft", *words], _env())
    args = [w.replace(str(tmp_path / "two"), str(tmp_path / "one")) for w in words if "=" in w]
    fn(load_config(None, args))
    one, two, start = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final"), _weights(tiny_causal_dir)
    moved = max(float((one[k] - v).abs().max()) for k, v in start.items() if k in one)
    diff, rel = _max_diff(one, two), _relative(start, one, two)
    print(f"{loop}: 1 vs 2 processes, largest weight difference {diff:.3g} (moved up to {moved:.3g}), relative {rel:.3g}")
    assert moved > 1e-3 and diff <= TOLERANCE and rel <= RELATIVE
    if loop == "ppo":
        from safetensors.torch import load_file

        heads = [load_file(str(tmp_path / run / "final" / "value_head.safetensors")) for run in ("one", "two")]
        assert _max_diff(*heads) <= TOLERANCE and float(heads[0]["linear.weight"].abs().max()) > 0


def _launch(processes: int, words: list[str]) -> list[str]:
    """The command that runs ``rlft WORDS`` on ``processes`` processes (torchrun), or plainly on one."""
    if processes == 1:
        return [sys.executable, "-m", "rlft", *words]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
            str(_free_port()), "-m", "rlft", *words]


@pytest.mark.parametrize("killed_at, resumed_at", [(2, 1), (1, 2)])
def test_a_run_killed_at_n_processes_resumes_at_m(tmp_path, tiny_causal_dir, tiny_dataset, killed_at, resumed_at):
    """A run SIGKILLed after a checkpoint of step 2 or 3 on N processes, resumed on M, ends where an
    uninterrupted one-process run ends."""
    from rlft.config import load_config
    from rlft.training.loop import train

    run_dir = tmp_path / "run"
    args = _overrides(tiny_causal_dir, tiny_dataset, run_dir, **{"run.steps": 4, "run.eval_every": 0})
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(_launch(killed_at, ["train", *args]), env=_env(pause=1.0), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 240
        while not _checkpoints(run_dir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank
        proc.wait(timeout=60)
    steps = _checkpoints(run_dir)
    assert steps and steps[-1] < 4 and not (run_dir / "final").exists(), log.read_text()[-4000:]  # killed mid-run
    if resumed_at == 1:
        assert train(load_config(None, [*args, "run.resume=true"])).step == 4
    else:
        _run(_launch(resumed_at, ["train", *args, "run.resume=true"]), _env())
    assert [r["step"] for r in _rows(run_dir, "train")] == [1, 2, 3, 4]
    alone = train(load_config(None, _overrides(tiny_causal_dir, tiny_dataset, tmp_path / "alone",
                                               **{"run.steps": 4, "run.eval_every": 0})))
    resumed_w, alone_w = _weights(run_dir / "final"), _weights(alone.run_dir / "final")
    diff, rel = _max_diff(resumed_w, alone_w), _relative(_weights(tiny_causal_dir), alone_w, resumed_w)
    print(f"killed at {killed_at}, resumed at {resumed_at} vs 1 process throughout: largest weight difference "
          f"{diff:.3g}, relative {rel:.3g}")
    assert diff <= TOLERANCE and rel <= RELATIVE
