"""PlainSampler: recorded log-probs, cache copying, seeds, EOS handling, greedy = generate."""

import pytest
import torch
from tests.tiny import BOS, EOS, PAD

from rlft.config import ModelConfig
from rlft.errors import RlftError
from rlft.models import completion_logprobs, load_policy
from rlft.rollout import ENGINES, PlainSampler, build_sampler
from rlft.rollout.plain import _nucleus, choose, cut_at_eos

PROMPTS = ["the cat sat on the mat", "hello", "translate to french: good morning"]


@pytest.fixture(scope="module")
def seq2seq(policies):
    return policies["seq2seq"]


def _sample(sampler, seed, group_size=3, max_new_tokens=10, prompts=PROMPTS, **kw):
    settings = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, **kw}
    return sampler.sample(prompts, group_size, max_new_tokens=max_new_tokens,
                          generator=torch.Generator().manual_seed(seed), **settings)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_recorded_logprobs_equal_completion_logprobs(arch, policies):
    causal = policies[arch]
    sampler = build_sampler("plain", causal, max_prompt_tokens=64, overlong="truncate", device="cpu")
    r = _sample(sampler, 0)
    assert r.completion_ids.shape[0] == r.prompt_ids.shape[0] == 9 and r.group_size == 3
    # row i belongs to prompt i // G
    assert torch.equal(r.prompt_ids[0::3], r.prompt_ids[2::3]) and not torch.equal(r.prompt_ids[0], r.prompt_ids[3])
    assert r.prompt_mask[:, -1].all()  # left padding: every prompt ends in the last column
    with torch.no_grad():
        want, _ = completion_logprobs(causal.model, r, is_seq2seq=False)
    torch.testing.assert_close(r.logprobs, want * r.completion_mask, atol=1e-4, rtol=0)
    # The G samples of one prompt differ (they come from one copied cache, not one draw).
    assert len({tuple(row) for row in r.completion_ids[:3].tolist()}) > 1


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_copied_cache_equals_prefilling_every_copy(arch, policies):
    causal = policies[arch]
    sampler = PlainSampler(causal, max_prompt_tokens=64, device="cpu")
    copied = _sample(sampler, 5)
    sampler.expand_cache = False
    repeated = _sample(sampler, 5)
    assert torch.equal(copied.completion_ids, repeated.completion_ids)
    torch.testing.assert_close(copied.logprobs, repeated.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_seeds(kind, causal, seq2seq):
    sampler = PlainSampler(causal if kind == "causal" else seq2seq, max_prompt_tokens=64)
    torch.manual_seed(0)
    a = _sample(sampler, 1)
    drawn = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), drawn)  # sampling draws only from its own generator
    b, c = _sample(sampler, 1), _sample(sampler, 2)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_eos_mask_padding_and_truncation(causal):
    sampler = PlainSampler(causal, max_prompt_tokens=64)
    free = _sample(sampler, 3, max_new_tokens=8)
    # Declare a token that the free run sampled in row 0 an EOS (as for a model with
    # several stop tokens): the same seed gives the same tokens, each row cut at its first stop.
    row0 = free.completion_ids[0].tolist()
    col = next(j for j in range(2, 8) if row0[j] not in row0[:j] + [EOS])
    stop = row0[col]
    assert EOS not in row0[:col]
    causal.model.generation_config.eos_token_id = [EOS, stop]
    try:
        r = _sample(sampler, 3, max_new_tokens=8)
    finally:
        causal.model.generation_config.eos_token_id = EOS
    assert r.completion_ids.shape[1] <= 8
    for row, (ids, mask) in enumerate(zip(r.completion_ids.tolist(), r.completion_mask.tolist())):
        original = free.completion_ids[row, :int(free.lengths[row])].tolist()
        ends = [i for i, t in enumerate(original) if t in (EOS, stop)]
        if ends:
            end = ends[0] + 1
            assert ids[:end] == original[:end] and not r.truncated[row]
            assert mask == [1.0] * end + [0.0] * (len(ids) - end)  # EOS itself is in the mask
            assert all(t == PAD for t in ids[end:]) and (r.logprobs[row, end:] == 0).all()
        else:
            assert ids == original and r.truncated[row] and all(m == 1.0 for m in mask)
    assert not r.truncated[0] and r.lengths[0] == col + 1 and r.truncated.any()
    # padding is not decoded (the stop token here is an ordinary token, so its text stays)
    want = causal.tokenizer.decode(r.completion_ids[0, :col + 1], skip_special_tokens=True).strip()
    assert r.texts[0] == want and "<pad>" not in "".join(r.texts)


def test_greedy_equals_generate_and_top_k_1(causal):
    sampler = PlainSampler(causal, max_prompt_tokens=64)
    greedy = sampler.greedy(PROMPTS, max_new_tokens=8)
    # make rows stop at different columns so that post-EOS padding is compared too
    stop = int(greedy.completion_ids[0, 3])
    causal.model.generation_config.eos_token_id = [EOS, stop]
    try:
        greedy = sampler.greedy(PROMPTS, max_new_tokens=8)
        batch = causal.tokenizer(PROMPTS, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = causal.model.generate(**batch, do_sample=False, max_new_tokens=8,
                                        eos_token_id=[EOS, stop], pad_token_id=PAD)
    finally:
        causal.model.generation_config.eos_token_id = EOS
    generated = out[:, batch["input_ids"].shape[1]:]
    assert torch.equal(greedy.completion_ids, generated[:, :greedy.completion_ids.shape[1]])
    assert (generated[:, greedy.completion_ids.shape[1]:] == PAD).all()
    assert greedy.lengths[0] == 4 and not greedy.truncated[0]
    # top-k = 1 and a tiny nucleus keep only the argmax: sampling reproduces greedy for any seed
    greedy = sampler.greedy(PROMPTS, max_new_tokens=8)
    for kw in ({"top_k": 1, "temperature": 0.7}, {"top_p": 1e-6, "temperature": 1.3}):
        r = _sample(sampler, 9, group_size=2, max_new_tokens=8, **kw)
        assert torch.equal(r.completion_ids[0::2], greedy.completion_ids)
        assert torch.equal(r.completion_ids[1::2], greedy.completion_ids)


def test_seq2seq_greedy_equals_generate_and_logprobs(seq2seq):
    sampler = PlainSampler(seq2seq, max_prompt_tokens=64)
    greedy = sampler.greedy(PROMPTS, max_new_tokens=6)
    batch = seq2seq.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = seq2seq.model.generate(**batch, do_sample=False, max_new_tokens=6)
    assert torch.equal(greedy.completion_ids, out[:, 1:])  # decoder start token stripped
    assert torch.equal(greedy.prompt_ids, batch["input_ids"])  # right-padded encoder inputs
    r = _sample(sampler, 4, group_size=2, max_new_tokens=6)
    assert r.completion_ids.shape == (6, 6) and r.prompt_ids.shape[0] == 6
    with torch.no_grad():
        want, _ = completion_logprobs(seq2seq.model, r, is_seq2seq=True)
    torch.testing.assert_close(r.logprobs, want * r.completion_mask, atol=1e-5, rtol=0)
    assert (r.logprobs <= 0).all() and (r.logprobs[r.completion_mask > 0] < 0).all()


def test_train_mode_restored_and_dropout_off_while_sampling(seq2seq):
    sampler = PlainSampler(seq2seq, max_prompt_tokens=64)
    seq2seq.model.train()  # T5 has dropout 0.1: eval() inside sample makes greedy deterministic
    try:
        a = sampler.greedy(PROMPTS, max_new_tokens=6)
        b = sampler.greedy(PROMPTS, max_new_tokens=6)
        assert seq2seq.model.training
    finally:
        seq2seq.model.eval()
    assert torch.equal(a.completion_ids, b.completion_ids)


def test_overlong_prompts(causal):
    text = "the cat sat on the mat " * 5
    n_tokens = len(causal.tokenizer(text)["input_ids"])
    assert n_tokens > 12
    with pytest.raises(RlftError, match=r"prompt 1: .*data.max_prompt_tokens=12"):
        PlainSampler(causal, max_prompt_tokens=12, overlong="reject").greedy(["hi", text], max_new_tokens=2)
    with pytest.warns(UserWarning, match="prompt 1"):
        r = PlainSampler(causal, max_prompt_tokens=12, overlong="truncate").greedy(["hi", text], max_new_tokens=2)
    assert r.prompt_ids.shape[1] == 12 and r.prompt_mask[1].sum() == 12
    full = causal.tokenizer(text)["input_ids"]
    assert r.prompt_ids[1].tolist() == [BOS] + full[-11:]  # the end of the prompt, after BOS


def test_checkpoint_reload_gives_identical_greedy(causal, tmp_path):
    causal.model.save_pretrained(tmp_path / "ckpt")
    causal.tokenizer.save_pretrained(tmp_path / "ckpt")
    reloaded = load_policy(ModelConfig(name_or_path=str(tmp_path / "ckpt")))
    a = PlainSampler(causal, max_prompt_tokens=64).greedy(PROMPTS, max_new_tokens=8)
    b = PlainSampler(reloaded, max_prompt_tokens=64).greedy(PROMPTS, max_new_tokens=8)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts


def test_choose_matches_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0]]).repeat(40000, 1)
    gen = torch.Generator().manual_seed(0)

    def freq(**kw):
        tokens = choose(logits, generator=gen, **{"temperature": 1.0, "top_p": 1.0, "top_k": 0, **kw})
        return torch.bincount(tokens, minlength=5).float() / len(tokens)

    torch.testing.assert_close(freq(), torch.softmax(logits[0], -1), atol=0.01, rtol=0)
    torch.testing.assert_close(freq(temperature=2.0), torch.softmax(logits[0] / 2, -1), atol=0.01, rtol=0)
    top2 = torch.softmax(logits[0, :2], -1)
    torch.testing.assert_close(freq(top_k=2), torch.cat([top2, torch.zeros(3)]), atol=0.01, rtol=0)
    # softmax = [.64, .24, .09, .03, 0]: top_p=0.8 keeps the first two (0.64 < 0.8 <= 0.88)
    torch.testing.assert_close(freq(top_p=0.8), torch.cat([top2, torch.zeros(3)]), atol=0.01, rtol=0)
    assert choose(logits[:2], 0.0, 1.0, 0, None).tolist() == [0, 0]


@pytest.mark.parametrize("scale", [0.3, 6.0])  # flat: the nucleus needs more than the top 1024
def test_nucleus_equals_full_sort(scale):
    probs = torch.softmax(torch.randn(4, 3000, generator=torch.Generator().manual_seed(0)) * scale, -1)
    for top_p in (0.3, 0.9, 0.999):
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
        want = torch.zeros_like(probs).scatter_(-1, order, sorted_probs * keep)
        assert torch.equal(_nucleus(probs, top_p), want)
    assert (want > 0).sum() > 4  # at 0.999 more than one token per row is kept


def test_cut_at_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    out, mask, truncated = cut_at_eos(ids, [2], pad_id=0)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_registry():
    assert ENGINES["plain"] is PlainSampler
    with pytest.raises(RlftError, match="unknown engine 'sglang'"):
        build_sampler("sglang", None)


@pytest.mark.parametrize("kind", ["llama", "seq2seq"])
def test_recorded_logprobs_are_at_the_sampling_temperature(kind, policies):
    # The loss scores the samples at the temperature that drew them: the on-policy ratio
    # pi_T(recomputed) / pi_T(rollout) is 1, and the temperature-1 log-probs differ from both.
    policy = policies[kind]
    sampler = PlainSampler(policy, max_prompt_tokens=64, device="cpu")
    is_seq2seq = kind == "seq2seq"
    r = _sample(sampler, 3, temperature=0.6)
    with torch.no_grad():
        at_t, _ = completion_logprobs(policy.model, r, is_seq2seq=is_seq2seq, temperature=0.6)
        at_1, _ = completion_logprobs(policy.model, r, is_seq2seq=is_seq2seq)
    ratio = torch.exp(at_t - r.logprobs) * r.completion_mask
    torch.testing.assert_close(ratio, r.completion_mask, atol=1e-4, rtol=0)
    assert ((at_1 - r.logprobs).abs() * r.completion_mask).max() > 0.05


def test_completion_logprobs_at_temperature_give_the_enumerated_gradient(causal):
    # One completion token, all V of them enumerated: sum_y pi_T(y) * (-R(y) grad log pi_T(y)),
    # the expected gradient of the policy-gradient loss, equals -grad E_{y~pi_T}[R(y)].
    from types import SimpleNamespace

    from rlft.algorithms import rl_loss

    model, temperature = causal.model, 0.5
    prompt = causal.tokenizer(["the cat"], return_tensors="pt")
    vocab = model.config.vocab_size
    batch = SimpleNamespace(prompt_ids=prompt["input_ids"].repeat(vocab, 1),
                            prompt_mask=prompt["attention_mask"].repeat(vocab, 1),
                            completion_ids=torch.arange(vocab)[:, None], completion_mask=torch.ones(vocab, 1))
    reward = torch.sin(torch.arange(vocab, dtype=torch.float32))                 # (V,) any function of y
    params = [p for p in model.parameters() if p.requires_grad]
    lp, _ = completion_logprobs(model, batch, is_seq2seq=False, temperature=temperature)   # (V, 1)
    pi = lp.detach().exp().squeeze(1)                                            # (V,) sums to 1
    torch.testing.assert_close(pi.sum(), torch.tensor(1.0))
    loss, _ = rl_loss(lp, lp.detach(), reward, batch.completion_mask, weights=pi, normalizer=1.0)
    got = torch.autograd.grad(loss, params)
    logits = model(**prompt).logits[0, -1]                                       # (V,)
    want = torch.autograd.grad(-(torch.softmax(logits / temperature, -1) * reward).sum(), params)
    for g, w in zip(got, want):
        # atol 3e-5, not 1e-6: an embedding row's gradient sums V sequences' nearly cancelling
        # float32 terms in another order than the enumerated one (1.03e-5 apart on one element of
        # 9600 on an Intel Xeon; the log-probs are float32 by design). Enumerating at T=1 instead
        # of 0.5 misses by 5.6.
        torch.testing.assert_close(g, w, atol=3e-5, rtol=1e-4)


def test_choose_never_returns_a_zero_probability_token(monkeypatch):
    # u * cdf[-1] == cdf[-1] (u = 1, or a product that rounds up) used to run past the last token
    # with mass and land on the vocabulary's last token, whose probability is 0 here.
    logits = torch.tensor([[0.0, 1.0, float("-inf"), 2.0, float("-inf"), float("-inf")]])
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.ones(shape))
    assert choose(logits, 1.0, 1.0, 0, None).tolist() == [3]
    assert choose(logits, 1.0, 1.0, 2, None).tolist() == [3]    # top-k leaves -inf on tokens 0, 2, 4, 5
    assert choose(logits, 1.0, 0.5, 0, None).tolist() == [3]    # the nucleus keeps token 3 alone


def test_seq2seq_sampling_ignores_forced_and_suppressed_tokens_of_the_generation_config(seq2seq):
    # The loss scores the model's own distribution; a generation config that forces the first and
    # last tokens or suppresses some (BART, Marian, Whisper checkpoints do) must not reshape sampling.
    sampler = PlainSampler(seq2seq, max_prompt_tokens=64)
    free = _sample(sampler, 0, group_size=16, max_new_tokens=5)
    common = torch.bincount(free.completion_ids[free.completion_mask > 0], minlength=8).topk(2).indices.tolist()
    config = seq2seq.model.generation_config
    saved = {k: getattr(config, k, None) for k in ("forced_bos_token_id", "forced_eos_token_id", "suppress_tokens")}
    config.forced_bos_token_id, config.forced_eos_token_id, config.suppress_tokens = 7, EOS, common
    try:
        r = _sample(sampler, 0, group_size=16, max_new_tokens=5)
    finally:
        for k, v in saved.items():
            setattr(config, k, v)
    assert torch.equal(r.completion_ids, free.completion_ids)  # same seed, same draws as without them
    assert (r.completion_ids[:, 0] != 7).any()
    assert torch.isin(r.completion_ids, torch.tensor(common)).any()
