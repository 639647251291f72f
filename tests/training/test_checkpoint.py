"""Checkpoints: exact round trip, plain-transformers loading, atomicity under crashes, pruning."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from rlft.config import OptimConfig
from rlft.errors import RlftError
from rlft.training import checkpoint as ckpt_mod
from rlft.training.checkpoint import (COMPLETE, export_final, latest_checkpoint, load_checkpoint,
                                   prune_checkpoints, resume_latest, save_checkpoint)
from rlft.training.optim import build_optimizer, build_scheduler

OPTIM = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=2, schedule="cosine")
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def tiny_model(seed: int = 0, n_embd: int = 16):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=n_embd, n_head=2, vocab_size=64, n_positions=32,
                        bos_token_id=2, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()  # eval: no dropout, so logits compare exactly


def trained(seed: int = 0, steps: int = 2):
    """A model, optimizer and scheduler after a few real updates (so Adam moments are non-zero)."""
    model = tiny_model(seed)
    opt = build_optimizer(model, OPTIM)
    sched = build_scheduler(opt, OPTIM, total_steps=10)
    x = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        model(x, labels=x).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def fresh(seed: int = 1):
    model = tiny_model(seed)
    opt = build_optimizer(model, OPTIM)
    return model, opt, build_scheduler(opt, OPTIM, total_steps=10)


def save(run_dir, step, model, opt, sched, **state):
    return save_checkpoint(run_dir, step, model=model, tokenizer=tiny_tokenizer(), optimizer=opt,
                           scheduler=sched, state=state)


def test_round_trip_restores_weights_optimizer_scheduler_and_state(tmp_path):
    model, opt, sched = trained()
    path = save(tmp_path, 7, model, opt, sched, best=0.5, algo={"baseline": 0.25},
                stats=torch.tensor([1.0, 2.0]), extra={"sampler": {"probs": [0.3, 0.7]}})
    assert path == tmp_path / "checkpoints" / "step-00000007"
    assert json.loads((path / "trainer_state.json").read_text()) == {"step": 7, "best": 0.5, "algo": {"baseline": 0.25}}

    model2, opt2, sched2 = fresh()
    assert not torch.equal(model2.transformer.wte.weight, model.transformer.wte.weight)
    state = load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2, generators=None)

    assert state["step"] == 7 and state["best"] == 0.5 and state["algo"] == {"baseline": 0.25}
    assert torch.equal(state["stats"], torch.tensor([1.0, 2.0]))  # non-JSON entries come back via extra.pt
    assert state["extra"] == {"sampler": {"probs": [0.3, 0.7]}}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert model2.lm_head.weight is model2.transformer.wte.weight  # still tied after loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid, pstate in s1["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(pstate[key].cpu(), s2["state"][pid][key].cpu())
    assert sched2.last_epoch == sched.last_epoch == 2
    assert sched2.get_last_lr() == sched.get_last_lr()
    # The optimizer still updates the model's own tensors (weights were copied in place).
    assert opt2.param_groups[0]["params"][0] is next(model2.parameters())


def test_checkpoint_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, opt, sched = trained()
    path = save(tmp_path, 1, model, opt, sched)
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    assert ids.tolist() == [[3, 4, 5, 6, 3, 7]]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_rng_states_and_generators_are_restored(tmp_path):
    model, opt, sched = trained()
    gen = torch.Generator().manual_seed(123)
    torch.rand(5, generator=gen)
    path = save(tmp_path, 1, model, opt, sched, generators={"rollout": gen})

    def draw():
        return (torch.rand(3), random.random(), np.random.rand(2), torch.rand(2, generator=gen))

    after_save = draw()
    draw(), draw()  # the run goes on and moves every generator
    load_checkpoint(path, model=None, optimizer=None, scheduler=None, generators={"rollout": gen})
    after_load = draw()
    assert torch.equal(after_save[0], after_load[0])
    assert after_save[1] == after_load[1]
    assert np.array_equal(after_save[2], after_load[2])
    assert torch.equal(after_save[3], after_load[3])

    other = torch.Generator().manual_seed(5)
    before = other.get_state()
    with pytest.warns(RuntimeWarning, match="no state for generator 'order'"):
        load_checkpoint(path, model=None, optimizer=None, scheduler=None, generators={"order": other})
    assert torch.equal(other.get_state(), before)


class Killed(BaseException):
    """Stands for the process dying (SIGKILL, power loss): no Python cleanup runs."""


def _crash_on(monkeypatch, filename, exc):
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith(filename):
            raise exc
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)


def test_crash_mid_write_keeps_previous_checkpoint_and_next_save_cleans_up(tmp_path, monkeypatch):
    model, opt, sched = trained()
    first = save(tmp_path, 1, model, opt, sched)
    with monkeypatch.context() as m:
        _crash_on(m, "scheduler.pt", Killed())
        with pytest.raises(Killed):
            save(tmp_path, 2, model, opt, sched)
    leftover = tmp_path / "checkpoints" / ".tmp-step-00000002"
    assert leftover.is_dir() and (leftover / "model.safetensors").exists()  # it died midway
    assert not (leftover / COMPLETE).exists()
    assert not (tmp_path / "checkpoints" / "step-00000002").exists()
    assert latest_checkpoint(tmp_path) == first
    with pytest.raises(RlftError, match="not a complete checkpoint"):
        load_checkpoint(leftover, model=model, optimizer=None, scheduler=None)

    third = save(tmp_path, 3, model, opt, sched)
    assert not leftover.exists()
    assert latest_checkpoint(tmp_path) == third
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001", "step-00000003"]


def test_failed_save_removes_its_temporary_directory(tmp_path, monkeypatch):
    model, opt, sched = trained()
    first = save(tmp_path, 1, model, opt, sched)
    _crash_on(monkeypatch, "rng.pt", OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, model, opt, sched)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]
    assert latest_checkpoint(tmp_path) == first


def test_resaving_a_step_replaces_it(tmp_path):
    model, opt, sched = trained()
    save(tmp_path, 4, model, opt, sched, note="first")
    path = save(tmp_path, 4, model, opt, sched, note="second")
    assert load_checkpoint(path, model=None, optimizer=None, scheduler=None)["note"] == "second"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000004"]


def test_latest_skips_incomplete_and_orders_by_step_number(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model, opt, sched = trained()
    save(tmp_path, 9, model, opt, sched)
    ten = save(tmp_path, 10, model, opt, sched)
    broken = shutil.copytree(ten, tmp_path / "checkpoints" / "step-00000011")
    (broken / COMPLETE).unlink()
    assert latest_checkpoint(tmp_path) == ten
    with pytest.raises(RlftError, match="step-00000011: not a complete checkpoint"):
        load_checkpoint(broken, model=model, optimizer=opt, scheduler=sched)
    with pytest.raises(RlftError, match="latest_checkpoint"):
        load_checkpoint(tmp_path, model=model, optimizer=opt, scheduler=sched)


class Tally:
    """Stands for the loop's stateful helpers (prompt sampler, tail guard): state_dict in, load_state_dict out."""

    def __init__(self, n: int = 0):
        self.n = n

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def test_resume_latest_restores_the_newest_checkpoint_into_the_loop(tmp_path):
    model2, opt2, sched2 = fresh()
    gen2 = torch.Generator().manual_seed(99)
    state, tally2 = {"skipped": 0, "algo": {}}, Tally()
    assert resume_latest(tmp_path, model=model2, optimizer=opt2, scheduler=sched2, generators={"order": gen2},
                         state=state, stateful={"tally": tally2}) is None  # nothing saved: a fresh start
    assert state == {"skipped": 0, "algo": {}} and tally2.n == 0

    model, opt, sched = trained()
    gen = torch.Generator().manual_seed(3)
    save(tmp_path, 2, model, opt, sched, state={"skipped": 9}, generators={"order": gen}, extra={"tally": {"n": 1}})
    save(tmp_path, 4, model, opt, sched, state={"skipped": 1, "best": 0.5}, generators={"order": gen},
         extra={"tally": Tally(5).state_dict()})
    expected = torch.rand(2, generator=gen)
    step = resume_latest(tmp_path, model=model2, optimizer=opt2, scheduler=sched2, generators={"order": gen2},
                         state=state, stateful={"tally": tally2})
    assert step == 4  # the newest checkpoint, not the first
    assert state == {"skipped": 1, "best": 0.5, "algo": {}}  # saved entries win, the others stay
    assert tally2.n == 5
    assert torch.equal(torch.rand(2, generator=gen2), expected)
    assert torch.equal(model2.transformer.wte.weight, model.transformer.wte.weight)
    assert sched2.last_epoch == sched.last_epoch == 2


def test_prune_keeps_newest(tmp_path):
    model, opt, sched = trained()
    for step in (1, 2, 3, 4):
        save(tmp_path, step, model, opt, sched)
    deleted = prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == ["step-00000001", "step-00000002"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]
    assert prune_checkpoints(tmp_path, keep=5) == []
    prune_checkpoints(tmp_path, keep=0)
    assert latest_checkpoint(tmp_path) is None


def test_sharded_checkpoint_loads(tmp_path):
    model, opt, sched = trained()
    path = save(tmp_path, 1, model, opt, sched)
    (path / "model.safetensors").unlink()
    model.save_pretrained(path, max_shard_size="6KB")
    assert (path / "model.safetensors.index.json").exists()
    assert len(list(path.glob("model-*.safetensors"))) > 1
    model2 = tiny_model(seed=1)
    load_checkpoint(path, model=model2, optimizer=None, scheduler=None)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_renamed_keys_fall_back_to_from_pretrained(tmp_path):
    # Saved under different key names (here the base-model names, without 'transformer.'), as
    # transformers does for architectures it converts on load: the direct copy cannot match.
    from safetensors.torch import load_file, save_file

    model, opt, sched = trained()
    path = save(tmp_path, 1, model, opt, sched)
    tensors = load_file(path / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    model2 = tiny_model(seed=1)
    load_checkpoint(path, model=model2, optimizer=None, scheduler=None)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_of_another_shape_are_a_clear_error(tmp_path):
    model, opt, sched = trained()
    path = save(tmp_path, 1, model, opt, sched)
    with pytest.raises(RlftError, match="do not fit the model"):
        load_checkpoint(path, model=tiny_model(n_embd=32), optimizer=None, scheduler=None)


def test_export_final_writes_a_plain_model_directory(tmp_path):
    from transformers import AutoModelForCausalLM

    model, _, _ = trained()
    out = export_final(tmp_path, model, tiny_tokenizer())
    assert out == tmp_path / "final"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not names & {"optimizer.pt", "rng.pt", COMPLETE}
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits, model(ids).logits)
    other = tiny_model(seed=3)
    export_final(tmp_path, other, tiny_tokenizer())  # replaces the previous export
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(reloaded.transformer.wte.weight, other.transformer.wte.weight)
    assert export_final(tmp_path, model, None, name="best") == tmp_path / "best"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "final"]


def test_resume_keeps_this_machines_optimizer_kernel(tmp_path):
    # Saved with the fused kernel (e.g. on a GPU), resumed where only the plain loop exists.
    model, opt, sched = trained()
    path = save(tmp_path, 1, model, opt, sched)
    model2 = tiny_model(seed=1)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1.0, fused=False)
    # one group here vs two saved: the mismatch is reported as a user error
    with pytest.raises(RlftError, match="optimizer.pt: does not match"):
        load_checkpoint(path, model=model2, optimizer=opt2, scheduler=None)
    saved_fused = torch.load(path / "optimizer.pt", weights_only=True)["param_groups"][0]["fused"]
    opt3 = build_optimizer(model2, OPTIM)
    for group in opt3.param_groups:
        group["fused"] = not saved_fused
    load_checkpoint(path, model=model2, optimizer=opt3, scheduler=None)
    assert all(g["fused"] is (not saved_fused) for g in opt3.param_groups)
    assert all(g["lr"] == pytest.approx(opt.param_groups[0]["lr"]) for g in opt3.param_groups)
