"""PPO's value head on the policy's trunk: it reads the LM head's input at each completion position,
on every path of ``completion_logprobs`` (prompt-shared, one pass, encoder-decoder), with the same
log-probabilities as without it, and its weights round-trip through a file."""

from __future__ import annotations

import pytest
import torch

from rlft.models import completion_logprobs
from rlft.models import logprobs as logprobs_module
from rlft.models.logprobs import completion_logprobs_values
from rlft.models.value_head import ValueHead, load_value_head, save_value_head, value_head_for
from tests.models.test_model_speed_paths import _grouped_batch


def _random_head(model) -> ValueHead:
    head = value_head_for(model)
    assert head(torch.ones(1, 2, head.linear.in_features)).abs().sum() == 0  # zero init: V = 0
    with torch.no_grad():
        head.linear.weight.normal_(generator=torch.Generator().manual_seed(0))
        head.linear.bias.fill_(0.25)
    return head


def _by_hand(model, head, batch) -> torch.Tensor:
    """w . h + b with h the last hidden state of one full pass at the positions predicting y_t, row by row."""
    rows = []
    for i in range(batch.completion_ids.shape[0]):
        keep = batch.prompt_mask[i] > 0
        ids = torch.cat([batch.prompt_ids[i][keep], batch.completion_ids[i]])[None]       # (1, P_i + T)
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]        # (1, P_i + T, H)
        t = batch.completion_ids.shape[1]
        rows.append(head(hidden[:, -t - 1:-1])[0])                                        # (T,)
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_values_read_the_last_hidden_state_on_both_causal_paths(arch, policies, monkeypatch):
    model = policies[arch].model.eval()
    head, batch = _random_head(model), _grouped_batch()
    real = batch.completion_mask > 0
    with torch.no_grad():
        want = _by_hand(model, head, batch)
        lp, _, shared = completion_logprobs_values(model, head, batch, is_seq2seq=False)
        plain_lp, _ = completion_logprobs(model, batch, is_seq2seq=False)
        monkeypatch.setattr(logprobs_module, "prefix_cache", lambda model: None)  # the one-pass path
        _, _, one_pass = completion_logprobs_values(model, head, batch, is_seq2seq=False, chunk=4)
    assert shared.shape == batch.completion_ids.shape and want.abs().max() > 0.1
    torch.testing.assert_close(shared[real], want[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(one_pass[real], want[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(lp, plain_lp)  # asking for values changes no log-probability


def test_values_on_an_encoder_decoder_and_their_gradient_reaches_the_trunk(policies):
    policy = policies["seq2seq"]
    model = policy.model.eval()
    head, batch = _random_head(model), _grouped_batch()
    lp, _, values = completion_logprobs_values(model, head, batch, is_seq2seq=True)
    out = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=batch.completion_ids),
                output_hidden_states=True)
    torch.testing.assert_close(values, head(out.decoder_hidden_states[-1]))
    values.sum().backward()
    assert head.linear.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_value_head_round_trips_through_its_file(tmp_path, policies):
    head = _random_head(policies["llama"].model)
    save_value_head(head, tmp_path)
    loaded = load_value_head(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), loaded.state_dict().values()))
