"""REINFORCE on rlft's Gymnasium env with a tabular policy: an outside RL loop, no rlft trainer.

    pip install 'rlft[gym]'
    python examples/gym_reinforce.py --tokenizer HuggingFaceTB/SmolLM2-135M-Instruct

Prints one JSON line: mean reward over the first and last 50 episodes and the greedy completions.
The reward mixes chrF (partial credit, so random tokens get a signal) with exact_match; a plain
tabular policy can still settle on a partial answer ("at" for "mat"), which is what the exact term
and the per-prompt baseline make rarer.
"""

import argparse
import json

import gymnasium as gym
import numpy as np

import rlft.env  # noqa: F401  registers rlft/TextGen-v0
from rlft.data.example import Example

PROMPTS = [Example("the cat sat on the", ("mat",), "cat"), Example("hello", ("world",), "hello")]


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="a tokenizer name or directory")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    env = gym.make("rlft/TextGen-v0", prompts=PROMPTS, tokenizer=args.tokenizer, reward="0.5*chrf + 0.5*exact_match", max_new_tokens=6)
    tok = env.unwrapped.tokenizer
    # The policy picks among the references' tokens and EOS: a table over a whole vocabulary would
    # need far more episodes than an example should take to find them.
    actions = sorted({i for ex in PROMPTS for r in ex.references for i in tok(r, add_special_tokens=False)["input_ids"]}
                     | {tok.eos_token_id})
    logits = np.zeros((len(PROMPTS), 6, len(actions)))  # pi(a | prompt, position) = softmax(logits[p, t])
    baseline = np.zeros(len(PROMPTS))
    rng = np.random.default_rng(args.seed)
    rewards = []
    obs, info = env.reset(seed=args.seed)
    for _ in range(args.episodes):
        p, taken, done = info["index"], [], False
        while not done:
            a = rng.choice(len(actions), p=softmax(logits[p, len(taken)]))
            obs, reward, terminated, truncated, info = env.step(actions[a])
            taken.append(a)
            done = terminated or truncated
        # REINFORCE (Williams 1992) with a running per-prompt baseline: grad log softmax = onehot - probs.
        advantage = reward - baseline[p]
        baseline[p] += 0.1 * advantage
        for t, a in enumerate(taken):
            grad = -softmax(logits[p, t])
            grad[a] += 1.0
            logits[p, t] += args.lr * advantage * grad
        rewards.append(reward)
        obs, info = env.reset()

    greedy = {}
    for p, ex in enumerate(PROMPTS):
        obs, info = env.reset(options={"index": p})
        done, t = False, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(actions[int(np.argmax(logits[p, t]))])
            done, t = terminated or truncated, t + 1
        greedy[ex.prompt] = info["completion"]
    result = {"first": float(np.mean(rewards[:50])), "last": float(np.mean(rewards[-50:])), "greedy": greedy}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
