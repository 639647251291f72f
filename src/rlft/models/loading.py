"""Load the policy (any causal or encoder-decoder LM with its tokenizer) and its frozen reference."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlft.config import ModelConfig, check_choice
from rlft.errors import RlftError
from rlft.models import registry
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


def fuse_activations(model: nn.Module) -> nn.Module:
    """Replace activations written as chains of elementwise ops by PyTorch's fused kernel.

    GPT-2's ``gelu_new`` (also GPT-J, GPT-Neo, CodeGen, ...) is ``0.5 * x * (1 + tanh(c * (x +
    0.044715 * x**3)))`` in Python: eight passes over the MLP's widest activation forward, more
    backward, which on CPU is about a quarter of a small GPT-2's RL step. ``F.gelu(approximate=
    'tanh')`` is the same formula in one pass (outputs agree to ~5e-7; transformers' own
    ``gelu_pytorch_tanh``). Modules are swapped in place, so the checkpoint and config do not change.
    """
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover - transformers is a dependency
        return model
    fused = getattr(activations, "GELUTanh", None) or getattr(activations, "PytorchGELUTanh", None)
    slow = tuple(getattr(activations, name) for name in ("NewGELUActivation", "FastGELUActivation")
                 if hasattr(activations, name))
    if fused is None or not slow:
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in slow:
                setattr(module, name, fused())
    return model


def load_reference(policy: Policy, cfg: ModelConfig | None = None) -> "Reference":
    """The frozen starting policy (call before the first update): ``with ref.active() as m: m(...)``.

    ``cfg`` is accepted for a future separate reference checkpoint; today the reference is always
    the starting policy, which is what the KL penalty of RLHF-style training measures against.
    With LoRA that is the policy with its adapter switched off (the base weights never train; for
    parts reused after an earlier LoRA run it is the base model, not that run's result).
    """
    from rlft.models.reference import Reference

    if policy.adapter is not None:
        return Reference(policy.model, policy.adapter.disable_adapter)
    reference = copy.deepcopy(policy.model)
    reference.requires_grad_(False)
    return Reference(reference.eval())


# ---------------------------------------------------------------------------------------------
# bf16 autocast on CPUs without bf16 matrix instructions

def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast(device_type, dtype)``, or a no-op for ``dtype=None``.

    On a CPU without native bf16 matmuls (no AVX512-BF16/AMX: AMD Zen 2/3, most Intel before
    Cooper Lake) PyTorch runs bf16 matmuls on a scalar fallback, 10-30x slower than fp32. There the
    matmuls and attention that autocast puts in bf16 are computed by the fp32 kernels on the
    bf16-rounded inputs, and the output is rounded to bf16 (``_Bf16OnFp32``): the numbers a bf16
    kernel gives (bf16 products are exact in fp32, which is where bf16 kernels accumulate), up
    to summation order, at fp32 speed. Everything else is plain autocast.
    """
    if dtype is None:
        return contextlib.nullcontext()
    amp = torch.autocast(device_type=device_type, dtype=dtype)
    if device_type != "cpu" or dtype != torch.bfloat16 or native_cpu_bf16():
        return amp
    return _bf16_on_fp32(amp)


@contextlib.contextmanager
def _bf16_on_fp32(amp):
    with amp, _Bf16OnFp32():
        yield


@functools.lru_cache(maxsize=None)
def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 matmul kernels in PyTorch (oneDNN's bf16 support check)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an unusual build: trust autocast
        return True


def _bf16_ops() -> dict:
    import torch.nn.functional as F

    tensor = torch.Tensor
    ops = [F.linear, F.scaled_dot_product_attention, torch.matmul, torch.mm, torch.bmm, torch.addmm,
           torch.baddbmm, torch.addbmm, tensor.matmul, tensor.__matmul__, tensor.mm, tensor.bmm,
           tensor.addmm, tensor.baddbmm, tensor.addbmm]
    return dict.fromkeys(ops)


_AUTOCAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class _Bf16OnFp32(torch.overrides.TorchFunctionMode):
    """Inside CPU bf16 autocast: matmul-like ops as ``bf16(fp32_op(fp32(bf16(inputs))))``.

    Built from differentiable ops, so the backward pass (run after the context closes) is fp32
    GEMMs too, with each gradient rounded to bf16 where a bf16 kernel would round it. Like
    autocast, a weight is rounded once per context and shared by its uses.
    """

    _ops: dict | None = None

    def __init__(self):
        super().__init__()
        if _Bf16OnFp32._ops is None:
            _Bf16OnFp32._ops = _bf16_ops()
        self.rounded: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self._ops or "out" in kwargs or not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        dtypes = [a.dtype for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dtype != torch.bool]
        if not dtypes or any(d not in _AUTOCAST_DTYPES for d in dtypes):  # autocast leaves these alone
            return func(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            out = func(*[self._round(a) for a in args], **{k: self._round(v) for k, v in kwargs.items()})
        return out.to(torch.bfloat16)

    def _round(self, value):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return value
        if not (value.is_leaf and value.requires_grad):
            return value.to(torch.bfloat16).float()
        key = (id(value), torch.is_grad_enabled())
        hit = self.rounded.get(key)
        if hit is None or hit[0] is not value:
            hit = self.rounded[key] = (value, value.to(torch.bfloat16).float())
        return hit[1]

