"""The chunked LM head (rlft.models.chunked_head) against the plain computation: log_softmax over the
full logits, and completion_logprobs through transformers' own head (the path it replaces).

Tolerances: fp32 values 1e-5 absolute, gradients 2e-5 relative (float summation order only).
bf16 autocast (full and LoRA): values within 2e-2, gradients within 2e-2 (head alone) and 3e-2
(whole model) relative of the plain bf16 graph (both round the logits to bf16, about 3 significant
digits; they differ in summation order).
"""


import pytest
import torch
import torch.nn.functional as F
from tests.tiny import EOS, PAD, grouped_batch, logprobs_and_grads

from rlft.config import LoraConfig, ModelConfig
from rlft.models import chunked_head, load_policy
from rlft.models import logprobs as logprobs_module
from rlft.models.bf16_emulation import autocast
from rlft.models.loading import disable_dropout
from rlft.models.logprobs import completion_logprobs, token_logprobs
from rlft.models.lora import apply_lora


def _case(rows=37, hidden=24, vocab=301, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=g)
    head = torch.nn.Linear(hidden, vocab, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=g) / 3)
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=g))
    ids = torch.randint(0, vocab, (rows,), generator=g)
    weights = (torch.randn(rows, generator=g), torch.randn(rows, generator=g))   # d loss / d logprob, d entropy
    return h, head, ids, weights


def _grads(fn, h, head, weights, with_entropy):
    h = h.clone().requires_grad_(True)
    head.zero_grad(set_to_none=True)
    lp, ent = fn(h)
    loss = (lp * weights[0]).sum() + ((ent * weights[1]).sum() if with_entropy else 0)
    loss.backward()
    grads = [h.grad, head.weight.grad] + ([head.bias.grad] if head.bias is not None else [])
    return lp.detach(), ent.detach() if ent is not None else None, grads


def _close_grads(got, want, tol):
    for g, w in zip(got, want, strict=True):
        err = (g.float() - w.float()).norm() / w.float().norm().clamp(min=1e-12)
        assert err < tol, f"relative gradient error {err:.2e}"


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_entropy", [False, True])
def test_head_logprobs_equal_log_softmax_values_and_gradients_fp32(temperature, with_entropy):
    h, head, ids, weights = _case()
    plain = _grads(lambda x: token_logprobs(head(x).float() / temperature, ids, with_entropy), h, head, weights,
                   with_entropy)
    # 5 rows per chunk: 37 rows make 7 chunks, the last one short
    chunked = _grads(lambda x: chunked_head.head_logprobs(x, head, ids, temperature=temperature,
                                                          with_entropy=with_entropy, chunk_logits=5 * 301),
                     h, head, weights, with_entropy)
    torch.testing.assert_close(chunked[0], plain[0], atol=1e-5, rtol=0)
    if with_entropy:
        torch.testing.assert_close(chunked[1], plain[1], atol=1e-5, rtol=0)
    else:
        assert chunked[1] is None
    _close_grads(chunked[2], plain[2], 2e-5)
    # and the plain reference is the textbook one: log_softmax gathered at the ids
    want = torch.log_softmax(head(h).float() / temperature, -1).gather(-1, ids[:, None]).squeeze(-1)
    torch.testing.assert_close(chunked[0], want.detach(), atol=1e-5, rtol=0)


def test_head_logprobs_under_bf16_autocast_match_the_plain_bf16_graph():
    h, head, ids, weights = _case(bias=False)

    def run(fn):
        def wrapped(x):
            with autocast("cpu", torch.bfloat16):
                return fn(x)
        return _grads(wrapped, h, head, weights, True)

    plain = run(lambda x: token_logprobs(head(x).float(), ids, True))
    chunked = run(lambda x: chunked_head.head_logprobs(x, head, ids, with_entropy=True, chunk_logits=8 * 301))
    fp32 = _grads(lambda x: token_logprobs(head(x).float(), ids, True), h, head, weights, True)
    torch.testing.assert_close(chunked[0], plain[0], atol=2e-2, rtol=0)
    torch.testing.assert_close(chunked[1], plain[1], atol=2e-2, rtol=0)
    _close_grads(chunked[2], plain[2], 2e-2)
    # it is bf16 arithmetic: the logits were rounded like the plain bf16 graph's, not computed in fp32
    assert (chunked[0] - plain[0]).abs().max() < (fp32[0] - plain[0]).abs().max()


@pytest.mark.parametrize("temperature, with_entropy", [(1.0, False), (0.7, True)])
def test_a_frozen_head_gets_its_input_gradient_from_the_forward(temperature, with_entropy, monkeypatch):
    # LoRA: the head's weight is frozen, only d/dhidden is needed; the forward prepares it and the
    # backward recomputes no logits
    h, head, ids, weights = _case(bias=False)
    head.weight.requires_grad_(False)
    plain = _grads(lambda x: token_logprobs(head(x).float() / temperature, ids, with_entropy), h, head, weights,
                   with_entropy)
    linear_calls = []
    real_linear = F.linear
    monkeypatch.setattr(chunked_head.F, "linear", lambda *a, **k: linear_calls.append(1) or real_linear(*a, **k))

    def chunked(x):
        out = chunked_head.head_logprobs(x, head, ids, temperature=temperature, with_entropy=with_entropy,
                                         chunk_logits=5 * 301)
        linear_calls.clear()   # count the backward's only
        return out

    got = _grads(chunked, h, head, weights, with_entropy)
    assert linear_calls == [], "the backward recomputed logits"
    assert got[2][1] is None and plain[2][1] is None
    torch.testing.assert_close(got[0], plain[0], atol=1e-5, rtol=0)
    _close_grads(got[2][:1], plain[2][:1], 2e-5)


# -- inside completion_logprobs, on real transformers models --------------------------------------



def _grouped_batch():
    """N = B * G = 9 rows, row i belongs to prompt i // 3, left-padded prompts of unequal length."""
    return grouped_batch()


_run = logprobs_and_grads


class _LargestLogits(torch.utils._python_dispatch.TorchDispatchMode):
    """The most rows of any new tensor (views of others left out: the head's weight transposed)
    with the vocabulary as its last dimension, made by any op, forward and backward."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if (isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab
                    and t.untyped_storage().data_ptr() not in inputs):
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def _tied_llama(tmp_path):
    """A tiny Llama whose LM head is its input embedding (as in SmolLM2)."""
    from tests.tiny import tiny_causal
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    path = tiny_causal(tmp_path)
    config = AutoConfig.from_pretrained(path)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path / "tied")
    return load_policy(ModelConfig(name_or_path=str(tmp_path / "tied")), device="cpu")


def _lora_policy(policies):
    """The tiny Llama with a LoRA adapter that changes its outputs (B != 0); its head is frozen."""
    policy = load_policy(ModelConfig(name_or_path=str(policies["llama"].model.name_or_path)), device="cpu")
    apply_lora(policy, LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # B = 0 at the start; make the adapter change the outputs
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    return policy


@pytest.mark.parametrize("arch", ["llama", "gpt2", "tied", "lora"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_through_chunked_head_equal_transformers_head(arch, temperature, policies, monkeypatch,
                                                                         tmp_path):
    if arch == "tied":
        policy = _tied_llama(tmp_path)
        assert policy.model.lm_head.weight is policy.model.model.embed_tokens.weight
    elif arch == "lora":
        policy = _lora_policy(policies)
    else:
        policy = policies[arch]
    model = disable_dropout(policy.model).train()
    vocab = model.get_output_embeddings().weight.shape[0]
    assert chunked_head.linear_head(model) is model.get_output_embeddings()
    batch = _grouped_batch()
    weights = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(chunked_head, "CHUNK_LOGITS", 4 * vocab)       # 45 positions in 12 chunks
    head_calls = []
    hook = model.get_output_embeddings().register_forward_hook(lambda *a: head_calls.append(1))
    with _LargestLogits(vocab) as largest:
        shared = _run(model, batch, weights, temperature=temperature)
        one_row_groups = _run(model, batch, weights, temperature=temperature, chunk=2)
    hook.remove()
    assert head_calls == [], "the model's own head ran: full logits"
    assert 0 < largest.rows <= 4, f"a tensor of {largest.rows} rows of logits was made"

    monkeypatch.setattr(logprobs_module, "linear_head", lambda model: None)   # transformers' head, full logits
    plain = _run(model, batch, weights, temperature=temperature)
    model.eval()
    real = batch.completion_mask > 0
    for got in (shared, one_row_groups):
        torch.testing.assert_close(got[0][real], plain[0][real], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1][real], plain[1][real], atol=1e-5, rtol=0)
        assert got[2].keys() == plain[2].keys() and len(plain[2]) > 0
        _close_grads([got[2][n] for n in plain[2]], list(plain[2].values()), 2e-5)
    if arch == "lora":
        assert plain[2] and all("lora_" in n for n in plain[2])   # only the adapter trains


def test_plain_head_only_for_known_model_types(policies, monkeypatch):
    assert chunked_head.linear_head(policies["seq2seq"].model) is None
    model = policies["llama"].model
    monkeypatch.setattr(model.config, "model_type", "gemma2")   # soft-caps its logits after the head
    assert chunked_head.linear_head(model) is None


@pytest.mark.parametrize("arch", ["llama", "lora"])
def test_bf16_completion_logprobs_through_chunked_head(arch, policies, monkeypatch):
    policy = _lora_policy(policies) if arch == "lora" else policies["llama"]
    model = disable_dropout(policy.model).train()
    batch = _grouped_batch()
    weights = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(2))

    def run():
        with autocast("cpu", torch.bfloat16):
            model.zero_grad(set_to_none=True)
            lp, ent = completion_logprobs(model, batch, is_seq2seq=False, with_entropy=True)
        ((lp * weights + 0.1 * ent) * batch.completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return lp.detach(), ent.detach(), grads

    chunked = run()
    monkeypatch.setattr(logprobs_module, "linear_head", lambda model: None)
    plain = run()
    model.zero_grad(set_to_none=True)
    model.eval()
    real = batch.completion_mask > 0
    torch.testing.assert_close(chunked[0][real], plain[0][real], atol=2e-2, rtol=0)
    torch.testing.assert_close(chunked[1][real], plain[1][real], atol=2e-2, rtol=0)
    _close_grads([chunked[2][n] for n in plain[2]], list(plain[2].values()), 3e-2)
    for name in plain[2]:   # every gradient points the same way: the head's, or the adapters' under LoRA
        assert F.cosine_similarity(chunked[2][name].flatten(), plain[2][name].flatten(), 0) > 0.999, name
    assert ("lm_head.weight" in plain[2]) == (arch == "llama")
