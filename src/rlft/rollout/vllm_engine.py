"""The vLLM rollout engine (``rollout.engine=vllm``, GPU only): vLLM samples, the trainer scores.

``VLLMSampler`` implements ``rlft.rollout.base.Sampler``, so the loop does not know which engine
runs. vLLM is imported only when the engine is built (``pip install 'rlft[vllm]'``); nothing on the
CPU path imports this module's vLLM side. Three parts, each testable without a GPU:

- ``WeightSync``: before each sampling call, the policy's current weights go to the engine if an
  optimizer step changed them since the last push (torch counts in-place writes per tensor,
  ``Tensor._version``; an optimizer step is one). Full fine-tuning pushes every weight under its
  Hugging Face checkpoint name (what vLLM's ``load_weights`` reads); LoRA pushes only the adapter:
  saved to a directory and used as a new vLLM LoRA request (a new id, so vLLM does not reuse the
  old one from its cache).
- ``VLLMEngine``: the thin adapter over ``vllm.LLM`` (generate token ids, load weights). Tests
  pass any object with the same two methods.
- ``VLLMSampler``: prompts encoded as the plain engine encodes them, completions from the engine,
  then log-probabilities from the trainer's own forward pass (``Rollout.logprobs``: the loss's
  ratio is then exactly 1 on-policy, whatever vLLM's kernels compute) with the engine's kept in
  ``Rollout.engine_logprobs``; the loop logs their difference (``logprob_mismatch``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from rlft.errors import RlftError
from rlft.rollout.base import Rollout


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """What one generate call asks of the engine (vLLM's SamplingParams, without importing vLLM)."""

    n: int                    # G completions per prompt
    temperature: float        # 0: greedy
    top_p: float
    top_k: int                # 0: off
    max_tokens: int
    stop_token_ids: list[int]
    seed: int | None


@dataclasses.dataclass(frozen=True)
class Completion:
    token_ids: list[int]      # the generated tokens, the stop token included when one was generated
    logprobs: list[float]     # the engine's log-probability of each of them
    truncated: bool           # stopped by max_tokens


class Engine(Protocol):
    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 adapter: AdapterVersion | None) -> list[list[Completion]]: ...

    def load_weights(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None: ...


@dataclasses.dataclass(frozen=True)
class AdapterVersion:
    """A LoRA adapter the engine should sample with: saved in ``path``, known to vLLM as ``version``."""

    version: int
    path: Path


def checkpoint_names(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight under its Hugging Face checkpoint name (what ``save_pretrained`` writes and
    vLLM's ``load_weights`` reads), detached; ``torch.compile``'s prefix removed."""
    model = getattr(model, "_orig_mod", model)
    for name, tensor in model.state_dict().items():
        yield name.removeprefix("_orig_mod."), tensor.detach()


class WeightSync:
    """Pushes the policy's weights (or only its LoRA adapter) to an engine when they changed."""

    def __init__(self, policy: Any, directory: str | Path | None = None) -> None:
        self.policy = policy
        self.directory = Path(directory or tempfile.mkdtemp(prefix="rlft-vllm-lora-"))
        self.adapter: AdapterVersion | None = None  # the adapter the engine samples with now
        self.pushes = 0
        self._seen: tuple[int, ...] | None = None

    def _state(self) -> tuple[int, ...]:
        """In-place write counts of the trainable tensors: an optimizer step changes them."""
        return tuple(p._version for p in self.policy.trainable.parameters() if p.requires_grad)

    def changed(self) -> bool:
        return self._state() != self._seen

    def push(self, engine: Engine, *, force: bool = False) -> bool:
        """Send the weights when they changed since the last push (or ``force``); True when sent."""
        if not (force or self.changed()):
            return False
        if self.policy.adapter is not None:  # LoRA: the adapter alone, as a new LoRA request
            from rlft.models.lora import save_adapter

            version = self.pushes + 1
            path = self.directory / f"v{version:06d}"
            save_adapter(self.policy.adapter, path)
            self.adapter = AdapterVersion(version, path)
        else:
            engine.load_weights(checkpoint_names(self.policy.model))
        self._seen, self.pushes = self._state(), self.pushes + 1
        return True


def logprob_mismatch(engine_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor,
                     mask: torch.Tensor) -> dict[str, float]:
    """How far the engine's log-probabilities of the sampled tokens are from the trainer's:
    the token mean and max of |engine - trainer|, and the mean of engine - trainer (its sign says
    which side is more confident). All (N, T); ``mask`` 1 on completion tokens."""
    diff = (engine_logprobs.float() - trainer_logprobs.float()) * mask                    # (N, T)
    tokens = mask.sum().clamp(min=1)
    return {"engine_logprob_abs_diff": float(diff.abs().sum() / tokens),
            "engine_logprob_max_diff": float(diff.abs().max()) if mask.any() else 0.0,
            "engine_logprob_bias": float(diff.sum() / tokens)}


class VLLMSampler:
    """Samples with vLLM; implements ``rlft.rollout.base.Sampler``. ``engine``: an ``Engine``
    (tests); by default vLLM is started on the policy's checkpoint (``VLLMEngine``)."""

    def __init__(self, policy: Any, *, max_prompt_tokens: int = 256, overlong: str = "truncate",
                 device: str | torch.device | None = None, autocast: torch.dtype | None = None,
                 engine: Engine | None = None, gpu_memory: float = 0.3) -> None:
        from rlft.rollout.plain import PlainSampler

        if policy.is_seq2seq:
            raise RlftError("config: rollout.engine=vllm samples decoder-only models; use rollout.engine=plain "
                            "for encoder-decoders")
        # The plain engine's prompt encoding and stop tokens, so both engines see the same prompts.
        self.plain = PlainSampler(policy, max_prompt_tokens=max_prompt_tokens, overlong=overlong, device=device,
                                  autocast=autocast)
        self.policy, self.device = policy, self.plain.device
        self.engine = engine if engine is not None else VLLMEngine(policy, gpu_memory=gpu_memory, device=self.device)
        self.sync = WeightSync(policy)

    def sample(self, prompts: list[str], group_size: int, *, temperature: float = 1.0, top_p: float = 1.0,
               top_k: int = 0, max_new_tokens: int, generator: torch.Generator | None = None) -> Rollout:
        """G completions per prompt from the engine, scored by the trainer (see the module docstring)."""
        from rlft.models.logprobs import completion_logprobs

        self.sync.push(self.engine)  # the policy as of the last update
        ids, mask = self.plain._encode(prompts)                                           # (B, P)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else None
        settings = SamplingSettings(group_size, temperature, top_p, top_k, max_new_tokens, self.plain._eos_ids(), seed)
        rows = [ids[i][mask[i] > 0].tolist() for i in range(len(prompts))]
        outs = [c for per_prompt in self.engine.generate(rows, settings, self.sync.adapter) for c in per_prompt]
        width = max(1, max(len(c.token_ids) for c in outs))
        pad = self.plain._pad_id()
        completion_ids = torch.full((len(outs), width), pad, dtype=torch.long)            # (N, T)
        completion_mask = torch.zeros((len(outs), width))                                 # (N, T)
        engine_lp = torch.zeros((len(outs), width))                                       # (N, T)
        for i, c in enumerate(outs):
            completion_ids[i, :len(c.token_ids)] = torch.tensor(c.token_ids, dtype=torch.long)
            completion_mask[i, :len(c.token_ids)] = 1.0
            engine_lp[i, :len(c.logprobs)] = torch.tensor(c.logprobs)
        batch = Rollout(prompt_ids=ids.repeat_interleave(group_size, 0).cpu(),
                        prompt_mask=mask.repeat_interleave(group_size, 0).cpu(), completion_ids=completion_ids,
                        completion_mask=completion_mask, logprobs=engine_lp, truncated=torch.tensor([c.truncated for c in outs]),
                        texts=[t.strip() for t in self.policy.tokenizer.batch_decode(completion_ids.tolist(),
                                                                                     skip_special_tokens=True)],
                        group_size=group_size, engine_logprobs=engine_lp * completion_mask)
        with torch.no_grad(), self.plain._autocast():
            on_device = dataclasses.replace(batch, prompt_ids=batch.prompt_ids.to(self.device),
                                            prompt_mask=batch.prompt_mask.to(self.device),
                                            completion_ids=completion_ids.to(self.device),
                                            completion_mask=completion_mask.to(self.device))
            trainer_lp, _ = completion_logprobs(self.policy.model, on_device, is_seq2seq=False,
                                                temperature=temperature if temperature > 0 else 1.0)
        batch.logprobs = trainer_lp.float().cpu() * completion_mask
        return batch

    def greedy(self, prompts: list[str], *, max_new_tokens: int) -> Rollout:
        return self.sample(prompts, 1, temperature=0.0, max_new_tokens=max_new_tokens)


class VLLMEngine:
    """``vllm.LLM`` on the policy's checkpoint, its engine core in this process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so pushed weights are not pickled. One GPU per engine
    (no tensor parallelism): with many processes each rank has its own. Not run without a GPU."""

    def __init__(self, policy: Any, *, gpu_memory: float, device: torch.device) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        if device.type == "cuda":  # many processes: each rank's engine on that rank's GPU
            torch.cuda.set_device(device)
        try:
            from vllm import LLM
        except ImportError:
            raise RlftError("config: rollout.engine=vllm needs vLLM (GPU only): pip install 'rlft[vllm]'") from None
        from rlft.models.loading import resolve_name

        from vllm.engine.arg_utils import EngineArgs

        lora = policy.adapter is not None
        options = {"enable_lora": True, "max_lora_rank": policy.adapter.peft_config["default"].r} if lora else {}
        if "logprobs_mode" in {f.name for f in dataclasses.fields(EngineArgs)}:  # vLLM >= 0.10.2
            options["logprobs_mode"] = "processed_logprobs"  # after the temperature, as the trainer scores
        self.llm = LLM(model=resolve_name(policy.name), tokenizer=resolve_name(policy.name),
                       gpu_memory_utilization=gpu_memory, dtype="bfloat16", enable_prefix_caching=True, **options)

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 adapter: AdapterVersion | None) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                                top_k=settings.top_k if settings.top_k > 0 else -1, max_tokens=settings.max_tokens,
                                stop_token_ids=settings.stop_token_ids, seed=settings.seed, logprobs=0,
                                skip_special_tokens=False)
        lora = LoRARequest(f"rlft-{adapter.version}", adapter.version, str(adapter.path)) if adapter else None
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, lora_request=lora,
                                 use_tqdm=False)
        return [[Completion(list(c.token_ids), [float(step[t].logprob) for step, t in zip(c.logprobs, c.token_ids)],
                            c.finish_reason == "length") for c in out.outputs] for out in outs]

    def load_weights(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        # Runs on the model inside the engine's worker (in this process, so nothing is pickled);
        # vLLM maps the checkpoint names onto its fused layers itself.
        weights = list(weights)
        self.llm.apply_model(lambda model: model.load_weights(weights))
