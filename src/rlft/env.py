"""A Gymnasium environment for text generation, scored by any rlft reward spec.

    import gymnasium as gym
    import rlft.env  # registers "rlft/TextGen-v0"
    env = gym.make("rlft/TextGen-v0", prompts="summarization", tokenizer="HuggingFaceTB/SmolLM2-135M")
    obs, info = env.reset(seed=0)                 # obs[:info["length"]]: the prompt's token ids
    obs, reward, terminated, truncated, info = env.step(token_id)

Two modes share one observation, the token ids of prompt + completion so far, right-padded to
``max_prompt_tokens + max_new_tokens`` (a ``MultiDiscrete`` of the vocabulary; ``info['length']``
says how many are real, since ``check_env`` wants every observation inside the space):

* ``mode='token'``: the action is one token id (``Discrete(vocab)``), appended to the completion.
* ``mode='sequence'``: the action is a whole completion, ``max_new_tokens`` token ids
  (``MultiDiscrete``, cut at the first EOS) or, as a convenience outside the declared space, a
  string; the episode is one step, a contextual bandit, and always ``terminated`` (``check_env``
  rejects truncation at step 1): ``info['truncated']`` says whether the completion was cut.
  (Gymnasium's ``Text`` space was not used: its charset cannot hold every string a tokenizer decodes.)

The reward is sparse, as in RL for text (Ranzato et al. 2016; rlft's own loop): 0 until the episode
ends, then ``score(reward, ...)`` of the decoded completion against the prompt's references.
In token mode ``terminated`` when the completion ends with EOS, ``truncated`` when it reaches
``max_new_tokens`` without one; in both modes that flag is ``info['truncated']`` at the end and goes
to the reward as ``truncated`` (so ``no_truncation`` works). A reward that fails
gives 0 and says why in ``info['reward_error']``: an outside loop cannot skip the step as rlft's does.

Gymnasium is an optional extra (``pip install rlft[gym]``); ``import rlft`` never imports it, this
module does, and registers the id on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlft.data.example import Example
from rlft.errors import RlftError

try:
    import gymnasium
    import numpy as np
    from gymnasium import spaces
except ImportError as err:  # pragma: no cover - the message is the point
    raise RlftError("rlft.env needs gymnasium: pip install 'rlft[gym]'") from err

ENV_ID = "rlft/TextGen-v0"


class TextGenEnv(gymnasium.Env):
    """Generate a completion for a sampled prompt; the reward spec scores it at the end.

    prompts: a list of rlft ``Example``s, or a bundled task name (its ``split`` file, template,
        reward spec and ``max_new_tokens`` become the defaults).
    tokenizer: a Hugging Face tokenizer, or a name/path for ``AutoTokenizer.from_pretrained``.
    reward: a reward spec as in ``reward.spec`` ("0.8*chrf + 0.2*length_penalty", "module:fn");
        default: the task's, else ``exact_match``. ``reward_options`` go to ``build_reward``.
    template: a format string with {prompt} (and other columns), or 'chat'.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, prompts: Sequence[Example] | str, tokenizer: Any, *, reward: str | None = None,
                 mode: str = "token", max_new_tokens: int | None = None, max_prompt_tokens: int = 256,
                 template: str | None = None, split: str = "train", render_mode: str | None = None,
                 reward_options: dict[str, Any] | None = None):
        from rlft.rewards import build_reward

        if mode not in ("token", "sequence"):
            raise RlftError(f"TextGenEnv: mode must be 'token' or 'sequence', got {mode!r}")
        if isinstance(prompts, str):
            prompts, defaults = _task_examples(prompts, split)
        else:
            prompts, defaults = list(prompts), {}
        if not prompts:
            raise RlftError("TextGenEnv: no prompts")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.examples = prompts
        self.tokenizer = tokenizer
        self.mode = mode
        self.template = template or defaults.get("template", "{prompt}")
        self.max_new_tokens = int(max_new_tokens or defaults.get("max_new_tokens", 32))
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.reward_fn = build_reward(reward or defaults.get("reward", "exact_match"), **(reward_options or {}))
        self.render_mode = render_mode
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else pad
        vocab = len(tokenizer)
        width = self.max_prompt_tokens + self.max_new_tokens
        self.observation_space = spaces.MultiDiscrete(np.full(width, vocab, dtype=np.int64))
        self.action_space = (spaces.Discrete(vocab) if mode == "token"
                             else spaces.MultiDiscrete(np.full(self.max_new_tokens, vocab, dtype=np.int64)))
        self._index = 0
        self._prompt_text = ""
        self._prompt_ids: list[int] = []
        self._completion: list[int] = []
        self._done = True

    # ------------------------------------------------------------------ Gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Sample a prompt with ``self.np_random`` (or take ``options['index']``)."""
        from rlft.data.templates import render_prompt

        super().reset(seed=seed)
        if options and "index" in options:
            self._index = int(options["index"]) % len(self.examples)
        else:
            self._index = int(self.np_random.integers(len(self.examples)))
        ex = self.examples[self._index]
        self._prompt_text = render_prompt(self.template, ex.prompt, self.tokenizer, "{prompt}", "", **ex.meta)
        ids = self.tokenizer(self._prompt_text, add_special_tokens=self.template != "chat")["input_ids"]
        self._prompt_ids = list(ids)[-self.max_prompt_tokens:]  # as data.overlong='truncate': keep the end
        self._completion = []
        self._done = False
        return self._obs(), self._info()

    def step(self, action):
        if self._done:
            raise RlftError("TextGenEnv.step after the episode ended; call reset()")
        if self.mode == "token":
            self._completion.append(int(action))
        else:
            self._completion = self._whole(action)
        ended = bool(self._completion) and self._completion[-1] == self.eos_id
        cut = not ended and len(self._completion) >= self.max_new_tokens
        info = self._info()
        reward = 0.0
        if ended or cut or self.mode == "sequence":
            self._done = True
            info["truncated"] = cut
            reward = self._reward(cut, info)
        # A sequence-mode episode ends by its one action, so it terminates even when the completion
        # was cut: Gymnasium's truncation means "stopped from outside", and check_env rejects it at step 1.
        if self.mode == "sequence":
            return self._obs(), reward, True, False, info
        return self._obs(), reward, ended, cut, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return f"{self._prompt_text}|{self.completion_text()}"
        return None

    # ------------------------------------------------------------------ helpers

    def completion_text(self) -> str:
        """The completion decoded without its EOS and special tokens."""
        ids = self._completion[:-1] if self._completion[-1:] == [self.eos_id] else self._completion
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _whole(self, action) -> list[int]:
        """A sequence-mode action as completion ids: cut after the first EOS, at most max_new_tokens.
        A string is tokenized and counts as finished (EOS appended) when it fits."""
        if isinstance(action, str):
            ids = list(self.tokenizer(action, add_special_tokens=False)["input_ids"])
            return ids[:self.max_new_tokens] if len(ids) >= self.max_new_tokens else ids + [self.eos_id]
        ids = [int(a) for a in np.asarray(action).reshape(-1)][:self.max_new_tokens]
        return ids[:ids.index(self.eos_id) + 1] if self.eos_id in ids else ids

    def _reward(self, truncated: bool, info: dict[str, Any]) -> float:
        from rlft.rewards import score

        text = self.completion_text()
        refs = list(self.examples[self._index].references)
        result = score(self.reward_fn, [self._prompt_text], [text], [refs], truncated=[truncated])
        info["completion"] = text
        if result.error:
            info["reward_error"] = result.error
            return 0.0
        info["reward_components"] = {c.name: c.values[0] for c in result.components}
        return float(result.rewards[0])

    def _obs(self) -> np.ndarray:
        ids = self._prompt_ids + self._completion
        obs = np.full(self.observation_space.shape, self.pad_id, dtype=np.int64)
        obs[:len(ids)] = ids
        return obs

    def _info(self) -> dict[str, Any]:
        return {"length": len(self._prompt_ids) + len(self._completion), "prompt_length": len(self._prompt_ids),
                "index": self._index, "example_id": self.examples[self._index].id}


def _task_examples(name: str, split: str) -> tuple[list[Example], dict[str, Any]]:
    """A bundled task's prompts of ``split`` and its template, reward and max_new_tokens: the
    settings the task gives a run (``task_config``), so the environment and ``rlft train`` agree."""
    from rlft.config import DataConfig
    from rlft.data.loading import load_examples
    from rlft.tasks import task_config

    settings = task_config(name)
    if split not in ("train", "validation", "test"):
        raise RlftError(f"TextGenEnv: split must be train, validation or test, got {split!r}")
    examples = load_examples(settings["data"][split], DataConfig())
    return examples, {"template": settings["data"]["template"], "reward": settings["reward"]["spec"],
                      "max_new_tokens": settings["rollout"]["max_new_tokens"]}


def make_vec(num_envs: int, **kwargs: Any) -> gymnasium.vector.VectorEnv:
    """``num_envs`` copies of ``TextGenEnv(**kwargs)`` stepped in lockstep in this process
    (``SyncVectorEnv``: the envs share the tokenizer, and scoring is cheap next to a policy's forward).
    Observations are (num_envs, width); a finished env resets on the next step (Gymnasium's
    default next-step autoreset)."""
    register()
    return gymnasium.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync", **kwargs)


def register() -> None:
    """Register ``rlft/TextGen-v0`` with Gymnasium (idempotent; done on importing rlft.env)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="rlft.env:TextGenEnv")


register()

__all__ = ["ENV_ID", "TextGenEnv", "make_vec", "register"]
