"""Policy and reference loading, and per-token log-probabilities."""

from rlft.models.loading import Policy, disable_dropout, load_policy, load_reference
from rlft.models.logprobs import completion_logprobs, token_logprobs

__all__ = ["Policy", "completion_logprobs", "disable_dropout", "load_policy", "load_reference",
           "token_logprobs"]
