"""Load the policy (any causal or encoder-decoder LM with its tokenizer) and its frozen reference."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlft.config import ModelConfig
from rlft.errors import RlftError

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


def resolve_name(name: str) -> str:
    """Map 'rlft-base' to the bundled directory and check that local paths exist."""
    if name == BUNDLED_NAME:
        if not (BUNDLED_DIR / "config.json").is_file():
            raise RlftError(f"model.name_or_path: the bundled model '{BUNDLED_NAME}' is not built yet "
                            f"(expected in {BUNDLED_DIR}); build it with `rlft pretrain` or pass a hub name")
        return str(BUNDLED_DIR)
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
    """Load ``cfg.name_or_path`` (hub name, local directory or 'rlft-base') and its tokenizer.

    The architecture comes from the checkpoint's config: ``kind='auto'`` picks seq2seq when the
    config says ``is_encoder_decoder``. Every loading failure becomes a one-line RlftError.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = resolve_name(cfg.name_or_path)
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    config = _load("model.name_or_path", cfg.name_or_path, AutoConfig.from_pretrained, path, **common)
    is_seq2seq = {"auto": bool(getattr(config, "is_encoder_decoder", False)),
                  "causal": False, "seq2seq": True}.get(cfg.kind)
    if is_seq2seq is None:
        raise RlftError(f"model.kind: '{cfg.kind}' is not one of auto, causal, seq2seq")
    auto = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    model = _load("model.name_or_path", cfg.name_or_path, auto.from_pretrained, path,
                  config=config, dtype=dtype, **common)
    model.to(device)

    tok_name = cfg.tokenizer or cfg.name_or_path
    tok_path = resolve_name(tok_name) if cfg.tokenizer else path
    tok_common = common if not cfg.tokenizer else {"trust_remote_code": cfg.trust_remote_code}
    from transformers import AutoTokenizer

    tokenizer = _load("model.tokenizer" if cfg.tokenizer else "model.name_or_path", tok_name,
                      AutoTokenizer.from_pretrained, tok_path, **tok_common)
    _fix_tokenizer(tokenizer, model, is_seq2seq, tok_name)
    return Policy(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, name=cfg.name_or_path)


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
        for attr, value in list(config.to_dict().items()):
            if ("dropout" in attr or attr.endswith("_pdrop")) and isinstance(value, float):
                setattr(config, attr, 0.0)
    return model


def load_reference(policy: Policy, cfg: ModelConfig | None = None) -> nn.Module:
    """A frozen copy of the policy as it is now (call before the first update).

    ``cfg`` is accepted for a future separate reference checkpoint; today the reference is always
    the starting policy, which is what the KL penalty of RLHF-style training measures against.
    """
    reference = copy.deepcopy(policy.model)
    reference.requires_grad_(False)
    return reference.eval()
