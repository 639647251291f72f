"""The run scaffold every training loop composes: one ``Run`` for RL, SFT and the loops to come.

A loop builds a ``Run`` and keeps only its own numbered steps; the ``Run`` holds what every loop
does the same way, so that it cannot drift between loops:

- the model's mode: dropout off (``dropout=False``) or as the model was configured;
- the run directory, the resolved ``config.yaml``, ``metrics.jsonl`` (+ TensorBoard), the progress bar;
- AdamW and the learning-rate schedule over ``total_steps`` (over the model and PPO's value head);
- resume from the newest checkpoint: weights, optimizer, scheduler, RNGs, named generators,
  ``state_dict()`` objects and the loop's own state, a dataclass (``trainer_state.json``);
- the evaluation cadence (a step-0 evaluation of a fresh run when ``eval_at_start``, every
  ``run.eval_every`` steps and at the last step) with one tag per evaluation, ``{name}-step-{step:08d}``;
- the checkpoint cadence (every ``run.save_every`` steps and at the last), pruning, the export to ``final/``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, TypeVar

import torch

from rlft.config import Config
from rlft.errors import RlftError
from rlft.rundir import jsonable
from rlft.training.distributed import Dist

if TYPE_CHECKING:
    from rlft.eval.result import EvalResult

S = TypeVar("S")


@dataclass
class RunResult:
    run_dir: Path
    step: int
    final_dir: Path | None
    evals: list[EvalResult] = field(default_factory=list)  # the validation evaluations, in order
    skipped_steps: int = 0


class Run:
    """The shared part of a training run; see the module docstring.

    Build it before anything that must see the starting model (the RL reference), then call
    :meth:`resume` with the loop's state, which loads the newest checkpoint when ``run.resume``.
    ``dropout=False`` zeroes every dropout probability in memory (exports keep the model's own):
    the RL loop needs the forward that computes the loss to be the distribution that sampled,
    or the importance ratio is not 1 on-policy; SFT keeps the model's dropout as a regularizer.
    """

    def __init__(self, config: Config, parts: Any, *, name: str, total_steps: int, dropout: bool,
                 eval_at_start: bool, value_head: torch.nn.Module | None = None) -> None:
        from rlft.models.loading import disable_dropout
        from rlft.models.value_head import with_value_head
        from rlft.training.optim import build_optimizer, build_scheduler

        self.config, self.parts, self.name, self.total = config, parts, name, total_steps
        self.policy, self.model = parts.policy, parts.policy.model
        if not dropout:
            disable_dropout(self.model)
        self.eval_at_start = eval_at_start
        self.val_set = parts.splits.get("validation", [])[: config.eval.max_examples]
        self.run_dir = Path(config.run.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.value_head = value_head  # PPO's critic: optimized with the model, saved in checkpoints and final/
        # Many processes: the model goes to the engine (DDP/FSDP/DeepSpeed), rank 0 alone writes.
        self.dist = getattr(parts, "dist", None) or Dist()
        if self.dist.sharded and (self.policy.adapter is not None or value_head is not None
                                  or name == "rl" and config.algo.kl_coef > 0):
            raise RlftError("FSDP/DeepSpeed: LoRA adapters, PPO's value head and the KL reference (a full copy of "
                            "the model; algo.kl_coef > 0) are not supported under a sharded engine; use the DDP "
                            "config (examples/accelerate/ddp.yaml) or algo.kl_coef=0, see docs/scaling.md")
        if self.dist.deepspeed and config.optim.grad_accum != 1:  # DeepSpeed steps inside its backward
            raise RlftError(f"DeepSpeed: set optim.grad_accum=1 (got {config.optim.grad_accum}); its "
                            "gradient_accumulation_steps must be 1 as well, see examples/accelerate/zero2.yaml")
        optimizer = build_optimizer(with_value_head(self.model, value_head), config.optim)
        self.scheduler = build_scheduler(optimizer, config.optim, total_steps)
        self.optimizer = self.dist.prepare(self.model, optimizer)

    def resume(self, state: S, *, generators: dict[str, torch.Generator],
               stateful: dict[str, Any] | None = None) -> S:
        """The loop's state (a dataclass), from the newest checkpoint when ``run.resume`` finds one,
        else ``state`` as given. Restores the weights, optimizer, scheduler, RNGs, ``generators``
        and each ``stateful[name].load_state_dict``; opens the metrics log and the progress bar."""
        from rlft.training.checkpoint import resume_latest
        from rlft.training.metrics import MetricsLogger, save_resolved_config
        from rlft.training.progress import Progress
        from rlft.training.setup import config_dict

        run = self.config.run
        if run.resume and self.dist.sharded:
            raise RlftError("run.resume: checkpoints are not written under FSDP/DeepSpeed (their optimizer state "
                            "is sharded); resume works under DDP and on one process, see docs/scaling.md")
        self.generators, self.stateful = generators, dict(stateful or {})
        if self.value_head is not None:
            self.stateful["value_head"] = self.value_head
        saved: dict[str, Any] = {}
        resumed = resume_latest(self.run_dir, model=self.policy.trainable, optimizer=self.optimizer,
                                scheduler=self.scheduler, generators=generators, state=saved,
                                stateful=self.stateful) if run.resume else None
        self.start = resumed or 0
        main = self.dist.is_main
        if main:
            save_resolved_config(self.run_dir, config_dict(self.config))
        self.logger = MetricsLogger(self.run_dir, tensorboard=run.tensorboard, resume_step=resumed) if main \
            else _NoLog()
        self.result = RunResult(self.run_dir, self.start, None)
        self.progress = Progress(total=self.total, initial=self.start, enabled=run.progress and main, desc=self.name)
        return _restored(state, saved, self.run_dir)

    def steps(self) -> Iterator[int]:
        """The steps still to run, 1-based; ``result.step`` follows."""
        for step in range(self.start + 1, self.total + 1):
            self.result.step = step
            yield step

    def scheduler_step(self) -> None:
        """Advance the learning-rate schedule, also after a skipped update (it follows the step number)."""
        with warnings.catch_warnings():  # torch warns when no optimizer.step() came first
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def log_step(self, step: int, row: dict[str, Any], shown: dict[str, float]) -> None:
        """One ``train`` line in metrics.jsonl and a tick of the progress bar showing ``shown``."""
        self.logger.log(step, "train", row)
        self.progress.update(1, shown)

    def write(self, message: str) -> None:
        """A line to the terminal that does not break the progress bar (rank 0's only)."""
        if self.dist.is_main:
            self.progress.write(message)

    def eval_due(self, step: int) -> bool:
        """Step 0 of a fresh run (with ``eval_at_start``), every ``run.eval_every`` steps and the last step,
        when there is a validation set."""
        every = self.config.run.eval_every
        if step == 0:
            return bool(self.val_set) and self.eval_at_start and self.start == 0
        return bool(self.val_set) and (every > 0 and step % every == 0 or step == self.total)

    def evaluate(self, step: int, *, reference: Any = None) -> EvalResult:
        """Greedy evaluation on the validation set, in eval mode (the model's mode is restored after)."""
        from rlft.eval.evaluate import evaluate

        training = self.model.training
        self.model.eval()
        ev = evaluate(self.parts, self.val_set, reference=reference, tag=f"{self.name}-step-{step:08d}", step=step,
                      dist=self.dist)
        self.model.train(training)
        self.result.evals.append(ev)
        return ev

    def checkpoint(self, step: int, state: Any, *, force: bool = False) -> None:
        """Save every ``run.save_every`` steps, at the last step, or when ``force``; keep the newest
        ``run.keep_checkpoints``. ``state`` is the loop's state dataclass."""
        from rlft.training.checkpoint import prune_checkpoints, save_checkpoint

        run = self.config.run
        if not (run.save_every and step % run.save_every == 0 or step == self.total or force) or self.dist.sharded:
            return  # a sharded engine's optimizer state is split over the ranks: final/ only (docs/scaling.md)
        saved: dict[str, Any] = {"state": jsonable(state, allow_nan=True), "generators": self.generators}
        if self.stateful:
            saved["extra"] = {name: obj.state_dict() for name, obj in self.stateful.items()}
        if self.dist.is_main:  # the ranks hold the same replica, optimizer and (global) loop state
            save_checkpoint(self.run_dir, step, model=self.policy.trainable, tokenizer=self.policy.tokenizer,
                            optimizer=self.optimizer, scheduler=self.scheduler, state=saved)
            prune_checkpoints(self.run_dir, run.keep_checkpoints)
        self.dist.barrier()

    def export(self, name: str) -> Path:
        """The model as a plain ``from_pretrained`` directory ``run_dir/{name}`` (``best``, ``final``), with
        the value head beside the model files when there is one."""
        from rlft.training.checkpoint import export_final

        weights = self.dist.full_state_dict(self.model)  # FSDP/DeepSpeed: gathered on every rank's call
        if self.dist.is_main:
            export_final(self.run_dir, self.policy.trainable, self.policy.tokenizer, name=name,
                         value_head=self.value_head, state_dict=weights)
        self.dist.barrier()
        return self.run_dir / name

    def finish(self) -> RunResult:
        """Close the progress bar, export ``final/``, close the log; the run's result."""
        self.progress.close()
        self.model.eval()
        self.result.final_dir = self.export("final")
        self.logger.close()
        return self.result


def _restored(state: S, saved: dict[str, Any], where: Path) -> S:
    """``state`` with the fields a checkpoint saved; a field the checkpoint lacks keeps its value."""
    if not saved:
        return state
    names = {f.name for f in dataclasses.fields(state)}
    unknown = sorted(set(saved) - names)
    if unknown:  # written by another version of the loop
        warnings.warn(f"{where}: ignoring unknown loop state {', '.join(unknown)} on resume", stacklevel=3)
    return dataclasses.replace(state, **{k: v for k, v in saved.items() if k in names})


class _NoLog:
    """The metrics log of a rank other than 0: rank 0 writes the run's one metrics.jsonl."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    log_text = flush = close = log
