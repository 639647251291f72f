"""Build the parts a run needs from its Config: device, policy, data, reward, sampler.

Shared by ``rlft train``, ``rlft sft``, ``rlft eval`` and ``rlft generate`` so that all four
read data, render prompts and decode exactly the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rlft.config import Config, with_defaults, with_overrides
from rlft.data.example import Example
from rlft.training.distributed import Dist


@dataclass
class Parts:
    config: Config
    device: torch.device
    precision: str                       # 'fp32' | 'bf16'
    policy: Any                          # rlft.models.loading.Policy
    splits: dict[str, list[Example]]     # 'train' / 'validation' / 'test'
    reward_fn: Callable[..., list[float]]
    sampler: Any                         # rlft.rollout.base.Sampler
    autocast: Callable[[], Any]          # () -> context manager
    max_prompt_tokens: int               # data.max_prompt_tokens, capped by the context window
    dist: Dist = field(default_factory=Dist)  # this process's rank, world and device (one process: 0, 1)

    @property
    def frozen_in_bf16(self) -> bool:
        """Whether frozen weights (a LoRA base, full fine-tuning's reference copy) are stored in bf16:
        under bf16 autocast on a CPU (the same numbers, half the memory, no per-call casts); not on
        GPUs, where FSDP and DeepSpeed want one dtype per flat parameter and a cast costs little."""
        return self.precision == "bf16" and self.device.type == "cpu"


def apply_task_defaults(config: Config) -> Config:
    """Fill in a bundled task's data paths, template, instruction, reward and metric, and what a
    known model implies (an instruct model of the registry takes ``data.template=chat``), where
    the user gave no value (``explicit_keys``): explicit settings always win, even when they
    equal the global default; the model's defaults win over the task's."""
    from rlft.config import explicit_keys
    from rlft.models.registry import known
    from rlft.tasks import task_config

    model = known(config.model.name_or_path)
    layers = [task_config(config.data.task) if config.data.task else {}, model.defaults if model else {}]
    if not any(layers):
        return config
    given = explicit_keys(config)
    sections: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            for key, value in values.items():
                if f"{section}.{key}" not in given:
                    sections.setdefault(section, {})[key] = value
    return with_defaults(config, **sections)


def build_parts(config: Config, *, need_data: bool = True) -> Parts:
    from rlft.models.loading import load_policy
    from rlft.rewards import build_reward
    from rlft.rollout import build_sampler
    from rlft.training.distributed import from_launcher
    from rlft.training.runtime import autocast_context, release_freed_memory, resolved_precision, set_threads

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would interleave with rlft's own
    config = apply_task_defaults(config)
    set_threads(config.run.threads)
    if config.run.release_memory:
        release_freed_memory()
    dist = from_launcher(config.run.device)  # launched on many processes: this rank's device
    device = dist.device
    precision = resolved_precision(device, config.run.precision)
    reward_fn = build_reward(config.reward.spec, cjk=config.reward.cjk,
                             target_length_ratio=config.reward.target_length_ratio, device=device,
                             rm_batch_size=config.rm.score_batch_size, rm_max_length=config.rm.max_length,
                             rm_normalize=config.rm.normalize)  # the rm: terms' options
    splits: dict[str, list[Example]] = {}
    if need_data:
        from rlft.data.splits import load_splits

        splits = load_splits(config.data, normalize=config.frequency.normalize)
    policy = load_policy(config.model, device=device)
    max_prompt = _prompt_budget(config, policy)

    def autocast():
        return autocast_context(device, precision)

    engine_options = ({"gpu_memory": config.rollout.vllm_gpu_memory} if config.rollout.engine == "vllm"
                      else {"compile": config.rollout.compile})
    sampler = build_sampler(config.rollout.engine, policy, max_prompt_tokens=max_prompt,
                            overlong=config.data.overlong, device=device,
                            autocast=torch.bfloat16 if precision == "bf16" else None, **engine_options)
    return Parts(config, device, precision, policy, splits, reward_fn, sampler, autocast, max_prompt, dist)


def prepare_parts(config: Config, parts: Parts | None = None) -> Parts:
    """Seed every RNG from ``run.seed``, then build the parts, or reuse ``parts`` (its loaded model,
    data, reward and sampler) with every other setting taken from ``config``, task defaults applied."""
    from rlft.models.lora import apply_lora, keep_base_in_bf16
    from rlft.training.runtime import seed_everything

    seed_everything(config.run.seed)  # before building, so model init and data shuffles repeat
    if parts is None:
        parts = build_parts(config)
    else:
        parts.config = apply_task_defaults(config)
    # The resolved config says what ran: 'auto' becomes the precision it chose on this machine.
    parts.config = with_overrides(parts.config, run={"precision": parts.precision})
    # The one place LoRA goes on, for `rlft train` and `rlft sft` alike (`lora.r=0`: no-op).
    apply_lora(parts.policy, parts.config.lora)
    if parts.frozen_in_bf16:
        keep_base_in_bf16(parts.policy)
    if parts.config.optim.activation_checkpointing:
        _checkpoint_activations(parts.policy.model)
    return parts


def _checkpoint_activations(model: Any) -> None:
    """transformers' gradient checkpointing, non-reentrant: it needs no input that requires grad,
    so a LoRA model's frozen embeddings are fine (the reentrant form would need
    ``enable_input_require_grads``). It acts in train mode only: sampling is unchanged."""
    from rlft.errors import RlftError

    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RlftError(f"optim.activation_checkpointing: {type(model).__name__} does not support "
                        "gradient checkpointing in transformers")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _prompt_budget(config: Config, policy: Any) -> int:
    """Longest prompt that still leaves room for the completion in the model's context window."""
    import warnings

    from rlft.errors import RlftError

    wanted = config.data.max_prompt_tokens
    if policy.is_seq2seq:
        return wanted
    window = getattr(policy.model.config, "max_position_embeddings", None) or \
        getattr(policy.model.config, "n_positions", None)
    new = max(config.rollout.max_new_tokens, config.eval.max_new_tokens or 0)
    if window is None or wanted + new <= window:
        return wanted
    if window - new < 1:
        raise RlftError(f"config: rollout.max_new_tokens={new} does not fit the model's context window of {window} tokens")
    if config.data.overlong == "reject":
        raise RlftError(f"config: data.max_prompt_tokens={wanted} + max_new_tokens={new} exceeds the model's context "
                        f"window of {window} tokens; lower one of them")
    warnings.warn(f"data.max_prompt_tokens={wanted} + max_new_tokens={new} exceeds the model's context window "
                  f"({window}); prompts are truncated to {window - new} tokens", stacklevel=2)
    return window - new


def config_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
