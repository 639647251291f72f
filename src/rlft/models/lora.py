"""LoRA through PEFT: adapters on the attention and MLP projections, and their checkpoints.

``apply_lora`` wraps ``policy.model`` with a ``peft.PeftModel`` kept in ``policy.adapter``. PEFT
injects its layers into the transformers module in place, so ``policy.model`` stays the module
the sampler and ``completion_logprobs`` call (its forward keeps ``logits_to_keep`` and the KV
cache argument); only the adapter's parameters require grad. The KL reference is the same
module with the adapter switched off (``rlft.models.reference``), not a second copy. With
``lora.init_adapter`` the adapter starts from a saved one, and a frozen copy of it is added as a
second peft adapter (``reference.START``): the KL reference is then base + that adapter.

peft is imported inside the functions: ``import rlft`` stays cheap.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlft.config import LoraConfig
from rlft.errors import RlftError
from rlft.models.loading import is_linear
from rlft.models.reference import START

ADAPTER_DIR = "adapter"          # final/adapter/: the adapter alone, next to the merged model
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Attention and MLP projections by family; 'auto' takes those the model has. A model with none of
# them gets every linear layer but its output head.
_PROJECTIONS = frozenset({
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",   # Llama, Mistral, Qwen, SmolLM
    "c_attn", "c_proj", "c_fc",                                                    # GPT-2
    "q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1",                                # T5
    "out_proj", "fc1", "fc2",                                                      # BART, OPT
    "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h",                  # GPT-NeoX, Falcon
})


def _linear_names(model: nn.Module) -> set[str]:
    """Leaf names of the linear layers (``nn.Linear`` and GPT-2's ``Conv1D``), output head excluded."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        if is_linear(module):
            names.add(name.rsplit(".", 1)[-1])
    return names


def target_modules(model: nn.Module, spec: str) -> list[str]:
    """The module names that get adapters: ``spec='auto'`` or a comma list, checked against ``model``."""
    found = _linear_names(model)
    if spec.strip() == "auto":
        known = found & _PROJECTIONS
        return sorted(known or found)
    wanted = [m.strip() for m in spec.split(",") if m.strip()]
    missing = [m for m in wanted if m not in found]
    if missing:
        raise RlftError(f"config: lora.target_modules: no linear layer named {', '.join(map(repr, missing))} "
                        f"in the model (it has: {', '.join(sorted(found))})")
    return wanted


def apply_lora(policy: Any, cfg: LoraConfig, *, task_type: str | None = None) -> None:
    """Put a fresh LoRA adapter (B = 0, so the policy is unchanged) on ``policy.model`` in place,
    or with ``cfg.init_adapter`` the saved one (trained further) and a frozen copy of it.

    Leaves every base weight frozen. Idempotent: a policy that has an adapter keeps it (parts
    reused across runs continue training it). ``task_type``: peft's, by default the language
    model's; 'SEQ_CLS' (a reward model) also trains its fresh head in full (peft's modules_to_save).
    """
    if cfg.r == 0 or policy.adapter is not None:
        return
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError:
        raise RlftError("config: lora.r > 0 needs the peft package: pip install 'rlft[lora]'") from None

    targets = target_modules(policy.model, cfg.target_modules)
    conv1d = any(type(m).__name__ == "Conv1D" for n, m in policy.model.named_modules()
                 if n.rsplit(".", 1)[-1] in targets)
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                              fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
                              task_type=task_type or ("SEQ_2_SEQ_LM" if policy.is_seq2seq else "CAUSAL_LM"))
    with warnings.catch_warnings():  # peft reads a property that transformers 5 deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        adapter = get_peft_model(policy.model, peft_cfg)
    assert adapter.get_base_model() is policy.model  # injected in place: callers keep their module
    if cfg.init_adapter:
        _start_from(adapter, peft_cfg, cfg.init_adapter)
    policy.adapter = adapter


def adapter_source(path: str | Path) -> Path:
    """The directory that holds a saved adapter: ``path``, or ``path/adapter`` (a run's final/ or best/)."""
    path = Path(path).expanduser()
    for directory in (path, path / ADAPTER_DIR):
        if (directory / ADAPTER_WEIGHTS).is_file():
            return directory
    raise RlftError(f"lora.init_adapter: no {ADAPTER_WEIGHTS} in {path} or in {path / ADAPTER_DIR}")


def _start_from(adapter: Any, peft_cfg: Any, path: str) -> None:
    """Load the adapter saved at ``path`` into the trained adapter and into a frozen copy, ``START``."""
    import copy
    import json

    source = adapter_source(path)
    saved_path = source / "adapter_config.json"
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        ours = {"r": peft_cfg.r, "lora_alpha": peft_cfg.lora_alpha, "target_modules": sorted(peft_cfg.target_modules)}
        theirs = {"r": saved.get("r"), "lora_alpha": saved.get("lora_alpha"),
                  "target_modules": sorted(saved.get("target_modules") or [])}
        differ = [f"{k} {theirs[k]} (this run: {ours[k]})" for k in ours if theirs[k] != ours[k]]
        if differ:
            raise RlftError(f"lora.init_adapter: {saved_path} was saved with {'; '.join(differ)}; "
                            "set lora.r, lora.alpha and lora.target_modules to the adapter's")
    load_adapter_weights(adapter, source)
    frozen = copy.copy(peft_cfg)
    frozen.inference_mode = True
    adapter.add_adapter(START, frozen)
    load_adapter_weights(adapter, source, name=START)
    for name, p in adapter.named_parameters():
        if f".{START}." in name:
            p.requires_grad_(False)


def keep_base_in_bf16(policy: Any) -> int:
    """Store the frozen weights of the adapted layers in bf16, for runs under bf16 autocast
    (``rlft.models.bf16_emulation.store_in_bf16``: the same numbers, tested bit for bit): on
    SmolLM2-135M 215 MB less resident and no per-call copies. Biases, norms, embeddings and the
    (possibly tied) output head keep their dtype, and so does ``model.dtype``. The merged export
    adds the adapter to the rounded base in fp32 (``merged_state_dict``): the model that was
    trained. Returns how many weights were converted (0 without an adapter or when done already).
    """
    if policy.adapter is None:
        return 0
    from peft.tuners.lora import LoraLayer

    from rlft.models.bf16_emulation import store_in_bf16

    model = policy.adapter.get_base_model()
    done = store_in_bf16(model, (m.get_base_layer().weight for m in model.modules() if isinstance(m, LoraLayer)))
    if done:
        # transformers leaves the weights as views of the checkpoint file's memory map; the fp32
        # pages just read stay resident while any view (embeddings, norms) holds the mapping. A
        # copy of the rest lets it go: SmolLM2-135M at rest 1216 -> 811 MB RSS.
        for p in model.parameters():
            if p.dtype == torch.float32 and not p.requires_grad:
                p.data = p.data.clone()
    return done


def is_adapter(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (never imports peft: without it, nothing is one)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def load_adapter_weights(adapter: Any, directory: str | Path, *, name: str = "default") -> None:
    """Copy the adapter weights saved in ``directory`` into ``adapter``'s adapter ``name`` in place
    (its optimizer keeps pointing at the same tensors)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    if not path.is_file():
        raise RlftError(f"{directory}: no {ADAPTER_WEIGHTS} in the checkpoint (was it saved with lora.r=0?)")
    try:
        result = set_peft_model_state_dict(adapter, load_file(str(path), device="cpu"), adapter_name=name)
    except RuntimeError as err:  # torch's size mismatch: saved on another model or rank
        first = str(err).strip().splitlines()[-1].strip()
        raise RlftError(f"{path}: adapter weights do not fit this model ({first[:200]})") from None
    missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
    if missing or result.unexpected_keys:
        keys = missing or result.unexpected_keys
        raise RlftError(f"{path}: adapter weights do not fit this run's lora settings ({', '.join(keys[:3])})")


def merged_state_dict(adapter: Any) -> dict[str, torch.Tensor]:
    """The base model's state dict with every adapter merged in: W + (alpha / r) B @ A.

    Computed beside the model, not by ``merge_adapter``/``unmerge_adapter``: W + BA - BA is not W
    bit for bit, and training goes on after an export of ``best/``. The merged tensors are new;
    untouched ones are shared with the model (tied weights stay tied).
    """
    from peft.tuners.lora import LoraLayer

    model = adapter.get_base_model()
    name = adapter.active_adapter
    merged = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if getattr(module, "use_dora", {}).get(name) or getattr(module, "lora_bias", {}).get(name):
            raise RlftError("lora: merging DoRA or LoRA-bias adapters is not supported")
        base = module.get_base_layer()
        with torch.no_grad():
            # fp32 sum, stored in the model's dtype: a base kept in bf16 (keep_base_in_bf16) merges
            # into an fp32 model like the rest of its weights
            delta = module.get_delta_weight(name).float()
            merged[f"{prefix}.weight"] = (base.weight.float() + delta).to(model.dtype)
    out = {}
    for key, tensor in model.state_dict().items():
        # A module trained in full beside the adapter (a reward model's head, peft's modules_to_save)
        # is saved as its trained copy under its own name, not as the untouched original.
        if "lora_" in key or ".original_module." in key:
            continue
        key = key.replace(".base_layer.", ".").replace(f".modules_to_save.{name}.", ".")
        out[key] = merged.get(key, tensor)
    return out


def save_merged(adapter: Any, directory: Path) -> None:
    """``directory``: the merged model (loads with plain ``from_pretrained``) and, in ``adapter/``,
    the adapter alone (loads with ``PeftModel.from_pretrained`` on the base model)."""
    model = adapter.get_base_model()
    model.save_pretrained(directory, state_dict=merged_state_dict(adapter), safe_serialization=True)
    save_adapter(adapter, directory / ADAPTER_DIR)


def save_adapter(adapter: Any, directory: Path, **kwargs: Any) -> None:
    """The trained (active) adapter alone, in peft's format: not ``lora.init_adapter``'s frozen copy."""
    adapter.save_pretrained(directory, safe_serialization=True, selected_adapters=[adapter.active_adapter], **kwargs)
