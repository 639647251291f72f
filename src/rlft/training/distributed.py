"""Many processes behind one small object, so every loop reads the same on one process or many.

A run launched by ``accelerate launch`` or ``torchrun`` (``WORLD_SIZE`` > 1, or an accelerate
FSDP/DeepSpeed config) gets a ``Dist`` holding an ``accelerate.Accelerator`` (process group,
device, config file). Sharded engines, FSDP and DeepSpeed, get the model through
``accelerator.prepare`` and the loss through ``accelerator.backward``. Plain data parallelism
(accelerate's MULTI_GPU/MULTI_CPU, torchrun) averages the gradients itself, one all-reduce per
optimizer step, what DDP computes, without DDP's forward wrapper: DDP averages only gradients of
forward passes made through its wrapper, and rlft's speed paths call the model's trunk and head
separately (``rlft.models.chunked_head``), which would silently train each rank on its own
gradient. A plain ``rlft train`` gets ``Dist(device)``, whose every method is the single-process
identity; accelerate and torch.distributed are imported only when launched.

Data parallelism, the same update as one process at the same global batch:

- every rank draws the same B prompts (one sampler, one seed) and keeps its share
  (:func:`rank_share`): whole prompts, so a prompt's G samples stay on one rank;
- the per-sequence rewards are gathered, so advantages (group baselines, REINFORCE's running
  baseline, PPO's whitening) are computed over the global batch, as on one process;
- each rank's loss is normalized by the global token (or row) count over the world size, and
  the gradients are *averaged* over ranks, so the average is the single-process gradient.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch

from rlft.errors import RlftError


def rank_share(n: int, world: int, rank: int, minibatches: int = 1) -> torch.Tensor:
    """The positions (of 0..n-1) that ``rank`` of ``world`` takes: its slice of every minibatch.

    The batch is cut into ``minibatches`` consecutive minibatches (the update's optimizer steps)
    and each of those into ``world`` consecutive slices; rank r takes slice r of each, so the
    rank's own k-th minibatch is its part of the global k-th one and every optimizer step sees the
    rows one process would. Needs n divisible by world * minibatches when world > 1.  # (n / world,)
    """
    if world == 1:
        return torch.arange(n)
    if n % (world * minibatches):
        raise RlftError(f"config: rollout.prompts_per_step={n} must be a multiple of the number of processes "
                        f"({world}) times algo.minibatches ({minibatches}), so that every process gets an equal "
                        "share of every minibatch")
    return torch.arange(n).view(minibatches, world, -1)[:, rank].reshape(-1)


def launched() -> bool:
    """Whether this process is one of several started by a launcher, or runs an accelerate
    FSDP/DeepSpeed config (which wants the Accelerator even on one process)."""
    flags = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or any(os.environ.get(f, "").lower() == "true" for f in flags)


@functools.lru_cache(maxsize=None)
def _accelerator(cpu: bool) -> Any:
    # One per process: accelerate keeps its process group in shared state anyway.
    from accelerate import Accelerator

    return Accelerator(cpu=cpu)


def from_launcher(device_setting: str) -> Dist:
    """``Dist`` for this process: the launcher's rank and device, or one process on ``run.device``."""
    from rlft.training.runtime import resolve_device

    device = resolve_device(device_setting)
    if not launched():
        return Dist(device)
    try:
        accelerator = _accelerator(device.type == "cpu")  # cpu: the gloo backend (no GPU, or run.device=cpu)
    except ImportError:
        raise RlftError("launched on several processes, which needs accelerate: pip install 'rlft[dist]'") from None
    # accelerate names a CPU rank's device 'cpu:0'; rlft compares devices with plain 'cpu'
    return Dist(device if accelerator.device.type == "cpu" else accelerator.device, accelerator)


class _Forward:
    """The policy as the loss sees it: calls go through the engine's wrapper (DDP's gradient hooks,
    FSDP's gathering of shards), every attribute read goes to the model itself (config, forward's
    signature, ...), so the log-probability code needs to know nothing of the wrapper."""

    def __init__(self, model: torch.nn.Module, wrapped: Any) -> None:
        self.__dict__["_model"], self.__dict__["_wrapped"] = model, wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def is_activation_checkpointing(self) -> bool:  # read from the class by rlft.models.shared_prompt
        return bool(getattr(self._model, "is_activation_checkpointing", False))


def is_main_process() -> bool:
    """Rank 0 of a launched run, or a process that was not launched: the one that prints results."""
    return os.environ.get("RANK", "0") == "0"


class Dist:
    """This process's place in the run: ``rank`` of ``world``, its ``device``, and the few
    collective operations the loops need. Without an accelerator it is one process and every
    operation returns its input."""

    def __init__(self, device: torch.device | str = "cpu", accelerator: Any = None) -> None:
        self.device, self.accelerator = torch.device(device), accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self._wrapped: dict[int, Any] = {}

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and exports."""
        return self.rank == 0

    # -- the model and its update ---------------------------------------------------------------

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: the engine owns the parameters, gradients and optimizer state."""
        return self.accelerator is not None and str(self.accelerator.distributed_type).endswith(("FSDP", "DEEPSPEED"))

    @property
    def deepspeed(self) -> bool:
        return self.sharded and str(self.accelerator.distributed_type).endswith("DEEPSPEED")

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Hand the model and its optimizer to a sharded engine (FSDP/DeepSpeed), or, for plain data
        parallelism, start every rank from rank 0's weights; returns the optimizer to step. The
        model object stays the one the loop holds; :meth:`forward` gives an engine's wrapper."""
        if self.accelerator is None:
            return optimizer
        if not self.sharded:
            for p in model.parameters():  # what DDP does when it wraps a model
                torch.distributed.broadcast(p.data, src=0)
            return optimizer
        wrapped, optimizer = self.accelerator.prepare(model, optimizer)
        self._wrapped[id(model)] = wrapped
        return optimizer

    def forward(self, model: Any) -> Any:
        """What to call for a forward pass of ``model`` whose gradient the engine must see."""
        wrapped = self._wrapped.get(id(model))
        return model if wrapped is None or wrapped is model else _Forward(model, wrapped)

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, module: torch.nn.Module, max_norm: float) -> float:
        """The gradient norm, clipped to ``max_norm`` (0: not clipped), after averaging the gradients
        over the ranks: all of them, or under a sharded engine those it does not own (PPO's value head)."""
        from rlft.training.optim import clip_grad_norm

        if not self.sharded:
            self.average_grads(list(module.parameters()))
            return clip_grad_norm(module, max_norm)
        owned = {id(p) for m in self._wrapped.values() for p in m.parameters()}
        self.average_grads([p for p in module.parameters() if id(p) not in owned])
        params = [p for p in module.parameters() if p.grad is not None]
        return float(self.accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))

    def average_grads(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over the ranks, in one all-reduce per dtype (one process:
        nothing). Every rank must hold gradients for the same parameters."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        for dtype in sorted({g.dtype for g in grads}, key=str):
            same = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in same]).to(self.device)
            torch.distributed.all_reduce(flat)
            flat.div_(self.world)
            for g, part in zip(same, flat.split([g.numel() for g in same])):
                g.copy_(part.view_as(g))

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Under a sharded engine, the whole weights gathered from the shards (every rank must call
        it; rank 0 gets them); None otherwise, where the model holds them already."""
        if not self.sharded or id(model) not in self._wrapped:
            return None
        return self.accelerator.get_state_dict(self._wrapped[id(model)])

    # -- data ------------------------------------------------------------------------------------

    def share(self, n: int, minibatches: int = 1) -> torch.Tensor:
        """This rank's positions of a batch of ``n`` (``rank_share``).  # (n / world,)"""
        return rank_share(n, self.world, self.rank, minibatches)

    def split(self, items: list) -> list:
        """This rank's consecutive part of ``items`` (parts differ by at most one item); one process: all."""
        if self.world == 1:
            return items
        if len(items) < self.world:
            raise RlftError(f"config: a batch of {len(items)} cannot be split over {self.world} processes; "
                            "raise the batch size")
        return [items[i] for i in torch.arange(len(items)).tensor_split(self.world)[self.rank].tolist()]

    def rollout_generator(self, generator: torch.Generator, seed: int, step: int) -> torch.Generator:
        """The sampling generator of ``step``: the run's own on one process (as before); on many, a
        fresh one seeded by (seed, step, rank), so that a run resumed on another number of
        processes samples as deterministically as an uninterrupted one."""
        if self.world == 1:
            return generator
        return torch.Generator().manual_seed((int(seed) * 1_000_003 + step) * 4099 + self.rank)

    # -- collectives (identities on one process) ---------------------------------------------------

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` concatenated along dim 0 in rank order; a dim 1 of different
        lengths (tokens) is padded with zeros to the longest.  # (world * n, ...)"""
        if self.world == 1:
            return tensor
        home, tensor = tensor.device, tensor.to(self.device)
        if tensor.ndim > 1:
            width = self.max(tensor.shape[1])
            tensor = torch.nn.functional.pad(tensor, (0, 0) * (tensor.ndim - 2) + (0, width - tensor.shape[1]))
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts).to(home)

    def mine(self, gathered: torch.Tensor, n: int) -> torch.Tensor:
        """This rank's rows (``n`` of them) of a tensor made by :meth:`gather`."""
        return gathered if self.world == 1 else gathered[self.rank * n:(self.rank + 1) * n]

    def sum(self, value: Any) -> Any:
        """The sum over ranks of a number or tensor (same type back)."""
        if self.world == 1:
            return value
        t = torch.as_tensor(value, dtype=torch.float64, device=self.device).clone()
        torch.distributed.all_reduce(t)
        return t.item() if not isinstance(value, torch.Tensor) else t.to(value.dtype).to(value.device)

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return type(value)(t.item())

    def mean_metrics(self, row: dict[str, Any]) -> dict[str, Any]:
        """Each number of ``row`` averaged over ranks (equal shares: the mean of the rank means is
        the global mean), ``*_time`` entries the slowest rank's, in two all-reduces; None counts as
        NaN; text stays. Every rank must pass the same keys (the same config gives them)."""
        if self.world == 1:
            return row
        keys = [k for k, v in row.items() if v is None or isinstance(v, (int, float)) and not isinstance(v, bool)]
        values = torch.tensor([math.nan if row[k] is None else float(row[k]) for k in keys],
                              dtype=torch.float64, device=self.device)
        times = torch.tensor([k.endswith("_time") for k in keys], device=self.device)
        total, slowest = values.clone(), values.clone()
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
        merged = torch.where(times, slowest, total / self.world).tolist()
        return {**row, **dict(zip(keys, merged))}

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled through torch.distributed)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def first_error(self, error: str | None) -> str | None:
        """The first rank's error, when any rank has one: every rank then skips the step together."""
        if self.world == 1:
            return error
        return next((e for e in self.gather_objects(error) if e is not None), None)

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()
