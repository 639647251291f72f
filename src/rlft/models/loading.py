"""Load the policy (any causal or encoder-decoder LM with its tokenizer) and its frozen reference."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlft.config import ModelConfig, check_choice
from rlft.errors import RlftError
from rlft.models import registry
from rlft.models.fused_activations import fuse_activations
from rlft.models.gguf import gguf_source, load_gguf

BUNDLED_NAME = "rlft-base"
# The bundled model lives next to the package so that it ships in the wheel (package-data).
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "base-model"


@dataclass
class Policy:
    """The model being trained and the tokenizer that goes with it."""

    model: Any              # a transformers PreTrainedModel (AutoModelForCausalLM / AutoModelForSeq2SeqLM)
    tokenizer: Any          # a transformers tokenizer, padding side fixed for the architecture
    is_seq2seq: bool        # encoder-decoder (prompt -> encoder, completion -> decoder)
    name: str               # what the user asked for: hub name, directory or 'rlft-base'
    adapter: Any = None     # the peft.PeftModel around `model` when LoRA is on (rlft.models.lora)

    @property
    def trainable(self) -> Any:
        """What training changes and checkpoints hold: the LoRA adapter when there is one, else the model."""
        return self.adapter if self.adapter is not None else self.model


def resolve_name(name: str) -> str:
    """Map 'rlft-base' to the bundled directory, a known model (`rlft models`) to its checked cache
    directory (converting it on first use), and check that local paths exist."""
    if name == BUNDLED_NAME:
        if not (BUNDLED_DIR / "config.json").is_file():
            raise RlftError(f"model.name_or_path: the bundled model '{BUNDLED_NAME}' is not built yet "
                            f"(expected in {BUNDLED_DIR}); build it with `python -m recipes.pretrain` or pass a hub name")
        return str(BUNDLED_DIR)
    if registry.known(name):
        return str(registry.resolve(name))
    looks_local = name.startswith((".", "/", "~")) or os.sep in name and not _hub_like(name)
    if looks_local and not Path(name).expanduser().is_dir():
        raise RlftError(f"model.name_or_path: '{name}' does not exist "
                        "(no such directory; hub names look like org/name)")
    return str(Path(name).expanduser()) if looks_local else name


def _hub_like(name: str) -> bool:
    # 'org/name' is both a hub id and a relative path; it is a path only if that directory exists.
    return name.count("/") == 1 and not Path(name).is_dir()


def load_policy(cfg: ModelConfig, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Policy:
    """Load ``cfg.name_or_path`` (hub name, local directory, .gguf file, a known model or
    'rlft-base') and its tokenizer.

    The architecture comes from the checkpoint's config: ``kind='auto'`` picks seq2seq when the
    config says ``is_encoder_decoder``. Every loading failure becomes a one-line RlftError.
    """
    gguf = gguf_source(cfg.name_or_path, cfg.gguf_file)
    if gguf is not None:
        if cfg.kind == "seq2seq":
            raise RlftError("model.kind: a GGUF file holds a decoder-only model; use 'auto' or 'causal'")
        model, tokenizer = _load("model.name_or_path", cfg.name_or_path, load_gguf, *gguf, dtype=dtype)
        is_seq2seq, path = False, None
    else:
        path = resolve_name(cfg.name_or_path)
        model, is_seq2seq = _load_model(cfg, path, dtype)
    model.to(device)
    fuse_activations(model)

    if cfg.tokenizer or gguf is None:
        tokenizer = _load_tokenizer(cfg, path)
    _fix_tokenizer(tokenizer, model, is_seq2seq, cfg.tokenizer or cfg.name_or_path)
    return Policy(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, name=cfg.name_or_path)


def _load_model(cfg: ModelConfig, path: str, dtype: torch.dtype) -> tuple[Any, bool]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    config = _load("model.name_or_path", cfg.name_or_path, AutoConfig.from_pretrained, path, **common)
    check_choice("model.kind", cfg.kind)
    is_seq2seq = {"auto": bool(getattr(config, "is_encoder_decoder", False)),
                  "causal": False, "seq2seq": True}[cfg.kind]
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    model = _load("model.name_or_path", cfg.name_or_path, auto.from_pretrained, path,
                  config=config, dtype=dtype, **common)
    return model, is_seq2seq


def _load_tokenizer(cfg: ModelConfig, path: str | None) -> Any:
    """``cfg.tokenizer`` when set (a name, directory or .gguf file), else the model's at ``path``."""
    from transformers import AutoTokenizer

    if not cfg.tokenizer:
        return _load("model.name_or_path", cfg.name_or_path, AutoTokenizer.from_pretrained, path,
                     revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    gguf = gguf_source(cfg.tokenizer, None, field="model.tokenizer")
    if gguf is not None:
        return _load("model.tokenizer", cfg.tokenizer, AutoTokenizer.from_pretrained, str(gguf[0]),
                     gguf_file=gguf[1])
    return _load("model.tokenizer", cfg.tokenizer, AutoTokenizer.from_pretrained,
                 resolve_name(cfg.tokenizer), trust_remote_code=cfg.trust_remote_code)


def _load(field: str, name: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RlftError:
        raise
    except (OSError, ValueError, KeyError) as err:
        # transformers raises OSError for hub/network/missing files, ValueError/KeyError for an
        # unknown architecture or a config that does not fit the requested kind.
        cause = " ".join(str(err).split()) or type(err).__name__
        raise RlftError(f"{field}: cannot load '{name}': {cause[:300]}") from None


def _fix_tokenizer(tokenizer, model, is_seq2seq: bool, name: str) -> None:
    # Decoder-only batches are left-padded so every completion starts in the same column; encoders
    # with absolute positions (BART) need their text at position 0, hence right padding.
    tokenizer.padding_side = "right" if is_seq2seq else "left"
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise RlftError(f"model.tokenizer: '{name}' has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = tokenizer.pad_token_id


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability to 0, in modules and in the config.

    Dropout makes the training forward a different distribution from the one that sampled the
    rollouts, so the importance ratio is not 1 on-policy (the TRL/OpenRLHF default is to disable it).
    Some attention implementations read a float ``attention_dropout``/``dropout`` attribute rather
    than an ``nn.Dropout`` module, so those are zeroed too.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attr, value in list(vars(module).items()):
            if "dropout" in attr and isinstance(value, float):
                setattr(module, attr, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        saved = model.__dict__.setdefault("_rlft_dropout", {})  # the model's own values, for export
        for attr, value in list(config.to_dict().items()):
            if ("dropout" in attr or attr.endswith("_pdrop")) and isinstance(value, float):
                saved.setdefault(attr, value)
                setattr(config, attr, 0.0)
    return model


def restore_dropout_in_saved_config(model: nn.Module, directory: Path) -> None:
    """Write the dropout values ``disable_dropout`` zeroed back into ``directory/config.json``:
    an exported model keeps the dropout it came with (for fine-tuning it further), while the
    in-memory config stays zeroed for the RL loop."""
    import json

    saved = getattr(model, "_rlft_dropout", None)
    path = Path(directory) / "config.json"
    if not saved or not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update({k: v for k, v in saved.items() if k in config})
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_reference(policy: Policy, cfg: ModelConfig | None = None, *, bf16: bool = False) -> "Reference":
    """The frozen starting policy (call before the first update): ``with ref.active() as m: m(...)``.

    ``cfg`` is accepted for a future separate reference checkpoint; today the reference is always
    the starting policy, which is what the KL penalty of RLHF-style training measures against.
    With LoRA that is the policy with its adapter switched off (the base weights never train; for
    parts reused after an earlier LoRA run it is the base model, not that run's result), or, after
    ``lora.init_adapter``, the policy with the frozen copy of the adapter it started from.
    ``bf16``: the copy only ever runs under bf16 autocast, so its linear layers' weights are kept in
    bf16 (``store_in_bf16``; same numbers): 215 MB less on SmolLM2-135M.
    """
    from rlft.models.reference import Reference, starting_adapter

    if policy.adapter is not None:
        return Reference(policy.model, starting_adapter(policy.adapter))
    reference = copy.deepcopy(policy.model)
    reference.requires_grad_(False)
    if bf16:
        from rlft.models.bf16_emulation import store_in_bf16

        embeddings = {m.weight.data_ptr() for m in reference.modules() if isinstance(m, nn.Embedding)}
        store_in_bf16(reference, (m.weight for m in reference.modules()  # not a head tied to the embeddings
                                  if is_linear(m) and m.weight.data_ptr() not in embeddings))
    return Reference(reference.eval())


def is_linear(module: nn.Module) -> bool:
    """A linear layer: ``nn.Linear``, or GPT-2's ``Conv1D`` (the same product, weight transposed)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
