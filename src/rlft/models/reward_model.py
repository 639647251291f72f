"""Reward models: a scalar score r(prompt, completion) from an ``AutoModelForSequenceClassification``.

Any sequence-classification checkpoint with one label loads as is; a causal LM (Llama, GPT-2,
Qwen, ...) loads through the same class with a fresh one-output head (``score``) on its trunk,
which pools the last non-padding token. What ``rlft rm train`` exports is again such a
checkpoint, so it loads with plain ``AutoModelForSequenceClassification.from_pretrained``.

Training and scoring see a pair the same way (``encode``): the prompt and the completion as the
tokenizer's text pair, right-padded (positions then start at 0 whatever the batch, so a score does
not depend on what it is batched with), cut to ``max_length`` by taking tokens from the left of the
longer of the two, one at a time (``truncation='longest_first'``, ``truncation_side='left'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlft.errors import RlftError
from rlft.models.loading import Policy, _load, resolve_name


@dataclass
class RewardModel:
    model: Any          # a transformers ...ForSequenceClassification with num_labels=1
    tokenizer: Any      # right padding, left truncation (see the module docstring)
    name: str

    def as_policy(self) -> Policy:
        """The model in the ``Policy`` shape that ``apply_lora`` and the run scaffold take."""
        return Policy(model=self.model, tokenizer=self.tokenizer, is_seq2seq=False, name=self.name)


def load_reward_model(name_or_path: str, *, device: str | torch.device = "cpu", revision: str | None = None,
                      trust_remote_code: bool = False, field: str = "model.name_or_path") -> RewardModel:
    """A reward model from a hub name or directory (or 'rlft-base', a model of `rlft models`):
    a one-label sequence classifier, or a causal LM given a fresh scalar head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        path = resolve_name(name_or_path)
    except RlftError as err:  # it names model.name_or_path; an rm: reward is set in reward.spec
        raise RlftError(str(err).replace("model.name_or_path", field, 1)) from None
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    config = _load(field, name_or_path, AutoConfig.from_pretrained, path, **common)
    labels = getattr(config, "num_labels", 1)
    if any(a.endswith("ForSequenceClassification") for a in config.architectures or []) and labels != 1:
        raise RlftError(f"{field}: '{name_or_path}' is a classifier with {labels} labels; a reward model has one")
    config.num_labels = 1
    config.problem_type = "regression"
    model = _quietly(_load, field, name_or_path, AutoModelForSequenceClassification.from_pretrained, path,
                     config=config, dtype=torch.float32, **common)
    tokenizer = _load(field, name_or_path, AutoTokenizer.from_pretrained, path, **common)
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None and tokenizer.unk_token is None:
            raise RlftError(f"{field}: '{name_or_path}' has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head pools the last token that is not padding
    return RewardModel(model.to(device), tokenizer, name_or_path)


def _quietly(fn, *args, **kwargs):
    # A causal LM loaded as a classifier gets a load report (lm_head unused, score new) per load;
    # that is the expected case here, not a warning for the user.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def encode(tokenizer: Any, prompts: list[str], completions: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (N, T) of the (prompt, completion) text pairs."""
    enc = tokenizer([p + "\n" for p in prompts], completions, padding=True, truncation="longest_first",
                    max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def forward_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reward of each encoded row (N,), float32, with grad when enabled."""
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in batch.items()})
    return out.logits[:, 0].float()


@torch.no_grad()
def score_texts(rm: RewardModel, prompts: list[str], completions: list[str], *, batch_size: int,
                max_length: int) -> torch.Tensor:
    """Rewards of ``completions`` (N,) on CPU, in batches of ``batch_size``, the model in eval mode."""
    training = rm.model.training
    rm.model.eval()
    out = [forward_scores(rm.model, encode(rm.tokenizer, prompts[i:i + batch_size],
                                           completions[i:i + batch_size], max_length)).cpu()
           for i in range(0, len(prompts), batch_size)]
    rm.model.train(training)
    return torch.cat(out) if out else torch.zeros(0)
