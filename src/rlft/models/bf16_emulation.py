"""bf16 autocast on CPUs without bf16 matmul kernels (a speed path).

``autocast(device_type, dtype)`` is ``torch.autocast`` everywhere except bf16 on a CPU whose
PyTorch has no native bf16 matmul: there the matmul-like ops run on the fp32 kernels from
bf16-rounded inputs (``_Bf16OnFp32``), the numbers of a bf16 kernel at fp32 speed. The sampler
(``rlft.rollout.plain``) and the training and evaluation passes (``rlft.training.runtime.autocast_context``)
enter it. ``cast_frozen_once`` lets a no-grad block cast each frozen weight once instead of per call.
"""

from __future__ import annotations

import contextlib
import functools

import torch


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


def store_in_bf16(model: torch.nn.Module, weights) -> int:
    """Store frozen fp32 matmul weights in bf16, in place; returns how many were converted.

    Under bf16 autocast a linear layer's weight is rounded to bf16 before every matmul, so a frozen
    weight stored already rounded gives the same products bit for bit, without autocast's copy per
    call (kept for the backward) and at half the resident size. Only for weights that nothing but
    autocast matmuls reads: not embeddings (a lookup is not autocast; a tied output head shares
    them), norms or biases. Used for a LoRA model's base (``rlft.models.lora.keep_base_in_bf16``)
    and a full fine-tuning run's frozen reference copy (``rlft.models.loading.load_reference``).
    Nothing is converted when one of ``weights`` is ``model``'s first parameter: transformers reads
    a model's dtype from it (``model.dtype``, which sets e.g. the attention masks' dtype).
    """
    weights = list(weights)
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if any(w is first for w in weights):
        return 0
    done = 0
    for weight in weights:
        if weight.dtype == torch.float32 and not weight.requires_grad:
            weight.data = weight.data.to(torch.bfloat16)
            done += 1
    return done


@contextlib.contextmanager
def cast_frozen_once(model: torch.nn.Module, enabled: bool = True):
    """Inside a no-grad autocast block: cast each frozen weight of ``model`` once for the block.

    Autocast keeps its low-precision copy of a weight for the rest of the block only when the
    weight is a leaf that requires grad (``cached_cast`` in PyTorch's aten/src/ATen/autocast_mode.cpp;
    ``_Bf16OnFp32._round`` below does the same). Frozen weights, a LoRA model's base or a frozen
    reference copy, are cast again at every call: with LoRA on SmolLM2-135M, every decode step
    re-reads 135M fp32 weights to write their bf16 copies. Flagging them as requiring grad for the
    block lets the cache hold them; under no_grad no graph is built, so the numbers are the same
    (tested bit for bit). Sampling B=8 x G=4, 24 tokens, LoRA bf16 on one core: 7.1 s -> 5.1 s.
    """
    if not enabled:
        yield
        return
    if torch.is_grad_enabled():
        raise RuntimeError("cast_frozen_once is for no-grad blocks: it would make frozen weights trainable")
    # CPU weights only: on a GPU a cast costs little, and sharded (FSDP) parameters are best left alone
    frozen = [p for p in model.parameters()
              if not p.requires_grad and p.is_floating_point() and p.device.type == "cpu"]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


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

