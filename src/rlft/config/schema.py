"""The settings: frozen dataclasses, one per concern, each field with its default, its
documentation and, for a number, its allowed range (``doc``); a setting with a fixed set of
values is typed by a Literal; and the introspection the loader, the checks and the docs share
(``all_keys``, ``field_types``, ``get``, ``choices``)."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from rlft.algorithms import ALGORITHMS, KlEstimator, KlMode, LossNorm, setting_range

# The choice settings, each declared once here (the algorithms' in rlft.algorithms.registry):
# validation, `rlft --help`, the docs and the modules that dispatch on them read these (``choices``).
ModelKind = Literal["auto", "causal", "seq2seq"]
Overlong = Literal["truncate", "reject"]
Engine = Literal["plain", "vllm"]            # rlft.rollout.ENGINES maps each to its sampler
CjkMode = Literal["auto", "always", "never"]
FrequencyMode = Literal["sample", "loss"]
Schedule = Literal["constant", "linear", "cosine"]
Precision = Literal["auto", "fp32", "bf16"]
TieModelName = Literal["davidson", "rao_kupper"]  # rlft.algorithms.preference.TIE_MODELS maps each to its loss


def doc(default: Any, help: str, range: str | None = None,  # noqa: A002 - mirrors argparse's word
        choices: Mapping[str, Any] | None = None) -> Any:
    """A dataclass field with a default, its documentation and, for a number, its allowed range:
    an interval such as '(0, 1]' or '[1, inf)', checked by ``validate`` and shown in the docs.
    Every float must also be finite (NaN and inf are refused), range or not. ``choices``: a
    registry whose keys are the allowed values, read when checked (so an entry a user adds
    counts); a fixed set of values is a Literal type instead."""
    metadata: dict[str, Any] = {"help": help}
    if range is not None:
        metadata["range"] = _interval(range)
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    low_open: bool
    high_open: bool

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def _interval(text: str) -> Interval:
    low, high = (float(x) for x in text[1:-1].split(","))
    return Interval(low, high, text[0] == "(", text[-1] == ")")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = doc("rlft-base", "The policy: a Hugging Face hub name, a local directory, a .gguf file, a model rlft obtains offline (see `rlft models`, e.g. 'smollm2-135m') or 'rlft-base' (the bundled model).")
    gguf_file: Optional[str] = doc(None, "A .gguf file inside the directory `name_or_path` (or give the .gguf path as `name_or_path`); its weights are dequantized to float.")
    kind: ModelKind = doc("auto", "Architecture family: 'auto' (from the config), 'causal' (decoder-only) or 'seq2seq' (encoder-decoder).")
    trust_remote_code: bool = doc(False, "Allow custom modelling code shipped with the checkpoint. Off unless you trust the source.")
    revision: Optional[str] = doc(None, "Hub revision (branch, tag or commit) to load.")
    tokenizer: Optional[str] = doc(None, "Tokenizer name or path when it differs from the model's.")


@dataclass(frozen=True)
class DataConfig:
    task: Optional[str] = doc(None, "A bundled task (see `rlft tasks`); it fills in data paths, template and reward.")
    train: Optional[str] = doc(None, "Training prompts: a .jsonl/.csv/.parquet file, a `datasets` directory, or a hub dataset name.")
    validation: Optional[str] = doc(None, "Validation prompts (same formats). Empty: carved from `train` by `validation_fraction`.")
    test: Optional[str] = doc(None, "Held-out test prompts (same formats). Empty: carved from `train` by `test_fraction`.")
    hub_split: str = doc("train", "Split to read when `train` is a hub dataset or a `datasets` DatasetDict.")
    validation_fraction: float = doc(0.05, "Share of unique prompts held out for validation when no validation file is given (hash split).", range="[0, 1)")
    test_fraction: float = doc(0.05, "Share of unique prompts held out for test when no test file is given (hash split).", range="[0, 1)")
    prompt_field: str = doc("prompt", "Column holding the prompt text.")
    reference_field: str = doc("reference", "Column holding one reference text (string) or several (list of strings).")
    references_field: str = doc("references", "Column holding a list of references; used when `reference_field` is absent.")
    id_field: str = doc("id", "Optional column with a stable example id.")
    count_field: str = doc("count", "Optional column with how often the prompt occurs in traffic (a positive integer); `weight` is read too.")
    template: str = doc("{prompt}", "Prompt template, a Python format string with {prompt} and other columns of the row ({meta[page]}); 'chat' (chat/instruct models) sends `instruction` as the user turn through the tokenizer's chat template.")
    instruction: str = doc("{prompt}", "With template 'chat': the user turn, a format string with {prompt} and other columns of the row, e.g. 'Translate to French. Reply with the translation only.\\n\\n{prompt}'. A bundled task sets its own.")
    system_prompt: str = doc("", "With template 'chat': the system turn (plain text); empty: rlft sends none (a chat template may still write its own default one, as SmolLM2's does).")
    max_prompt_tokens: int = doc(256, "Longest prompt in tokens; longer prompts are handled by `overlong`.", range="[1, inf)")
    overlong: Overlong = doc("truncate", "What to do with a prompt over `max_prompt_tokens`: 'truncate' (keep its end, with a warning) or 'reject'.")
    max_examples: Optional[int] = doc(None, "Use at most this many training prompts (first N after splitting). Empty: all.", range="[1, inf)")


@dataclass(frozen=True)
class RolloutConfig:
    engine: Engine = doc("plain", "Sampling engine: 'plain' (KV-cache decode loop; `generate` for encoder-decoders) or 'vllm' (GPU, decoder-only, the 'vllm' extra: vLLM samples, the policy's weights or its LoRA adapter are pushed to it after every update, the trainer re-scores the tokens and the difference is logged as engine_logprob_abs_diff/max_diff/bias; see docs/scaling.md).")
    vllm_gpu_memory: float = doc(0.3, "rollout.engine=vllm: share of the GPU's memory vLLM may take (its gpu_memory_utilization); the trainer uses the rest.", range="(0, 1)")
    compile: bool = doc(False, "rollout.engine=plain, decoder-only models: run the decode steps through torch.compile over a static KV cache (rlft.rollout.compiled_decode). Same tokens up to summation order; the first sampling compiles (once per process and batch shape: 1.5-3 minutes for SmolLM2-135M on 2 CPU cores). Meant for GPUs, where a decode step is bound by kernel launches; not measured on one yet. On a 2-core CPU it gave no gain (0.70-1.04x tokens/s, BENCHMARKS.md). Needs a C++ compiler on CPU.")
    prompts_per_step: int = doc(8, "B: unique prompts sampled per RL step.", range="[1, inf)")
    group_size: int = doc(4, "G: completions sampled per prompt.", range="[1, inf)")
    max_new_tokens: int = doc(48, "Longest completion; a completion that reaches it without EOS counts as truncated.", range="[1, inf)")
    temperature: float = doc(1.0, "Sampling temperature; the loss scores the samples at this temperature too (log softmax(logits / temperature), as TRL and verl), so the on-policy ratio is 1.", range="(0, inf)")
    top_p: float = doc(1.0, "Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1 = off). The loss scores the tempered full distribution, not the truncated one (as TRL and verl): below 1 the update is slightly off-policy.", range="(0, 1]")
    top_k: int = doc(0, "Keep only the k most likely tokens (0 = off). Like top_p, it shapes sampling only; the loss scores the tempered full distribution.", range="[0, inf)")


@dataclass(frozen=True)
class RewardConfig:
    spec: str = doc("chrf", "Reward: a registered name ('chrf', 'bleu', 'rouge_l', ...), `module:function`, `rm:PATH` (a reward model from `rlft rm train`; see rm.normalize), or a weighted sum such as '0.8*chrf + 0.2*length_penalty'.")
    cjk: CjkMode = doc("auto", "Tokenize Chinese/Japanese by character for ROUGE/BLEU: 'auto' (detect), 'always', 'never'.")
    target_length_ratio: float = doc(1.0, "length_penalty: preferred completion length as a multiple of the reference length.", range="(0, inf)")
    normalize_components: bool = doc(False, "Training only: standardize each term of a weighted-sum reward within its group of G samples ((c - mean) / (std + 1e-4), unbiased std, a constant term gives 0; over the batch when G = 1) before the weighted sum, as in GDPO, so a term of large spread cannot drown one of small spread. Logged 'reward' and evaluation stay on the raw scale. Not with algo.name=scst (its greedy baseline is scored raw).")


@dataclass(frozen=True)
class AlgoConfig:
    name: str = doc("rloo", "Policy-gradient estimator: a key of rlft.algorithms.ALGORITHMS (one a user adds there too).", choices=ALGORITHMS)
    kl_coef: float = doc(0.0, "Weight of the KL penalty to the frozen reference model; 0 keeps no reference copy in memory.", range="[0, inf)")
    kl_mode: KlMode = doc("reward", "Where the KL penalty goes: 'reward' (per-token k1 = log pi - log pi_ref, detached, summed over the completion and subtracted from the reward before the advantages, as in TRL RLOO/OpenRLHF; its gradient is exactly that of KL(pi || pi_ref) over whole sequences) or 'loss' (a per-token term of the loss, see kl_estimator; it only sees each token's KL given its prefix).")
    kl_estimator: KlEstimator = doc("k1", "Per-token KL estimator. kl_mode 'reward' takes 'k1'. kl_mode 'loss' takes 'k2' ((log pi - log pi_ref)^2 / 2, expected gradient = that of KL(pi || pi_ref)) or 'k3' (GRPO's estimator; as a loss term its expected gradient is that of the reverse KL(pi_ref || pi)). 'k1' in the loss has zero expected gradient and is refused.")
    entropy_coef: float = doc(0.0, "Weight of the entropy bonus.", range="[0, inf)")
    clip_eps: float = doc(0.2, "GRPO/PPO ratio clipping: the ratio is clipped to [1 - eps, 1 + eps].", range=setting_range("clip_eps"))
    loss_norm: LossNorm = doc("token", "Loss normalization: 'token' (mean over all completion tokens) or 'sequence' (mean per sequence, then over sequences).")
    baseline_momentum: float = doc(0.9, "REINFORCE moving-average baseline momentum; 0 disables the baseline.", range=setting_range("baseline_momentum"))
    updates_per_batch: int = doc(1, "Passes over each batch of rollouts (PPO's epochs; 1 = on-policy), each of `minibatches` optimizer steps.", range="[1, inf)")
    minibatches: int = doc(1, "Optimizer steps per pass over a batch of rollouts: the batch is split into this many minibatches of whole rows, in order (each split again into optim.grad_accum micro-batches).", range="[1, inf)")
    scale_rewards: bool = doc(True, "GRPO: divide group-centred rewards by the group's standard deviation.")
    kl_target: float = doc(0.0, "Adaptive KL coefficient (Ziegler et al. 2019), for every algorithm: the target KL(pi || pi_ref) per completion in nats (k1 summed over its tokens); kl_coef is its starting value and is multiplied by 1 + clip(KL / kl_target - 1, -0.2, 0.2) * N / kl_horizon after each step of N completions. 0 = a fixed kl_coef.", range="[0, inf)")
    kl_horizon: int = doc(10000, "Adaptive KL coefficient: its horizon in completions (the larger, the slower it moves).", range="[1, inf)")
    gamma: float = doc(1.0, "PPO: discount of the per-token rewards in GAE.", range=setting_range("gamma"))
    lam: float = doc(0.95, "PPO: lambda of GAE (1 = Monte-Carlo returns, 0 = one-step TD errors).", range=setting_range("lam"))
    vf_coef: float = doc(0.1, "PPO: weight of the value loss in the loss (the value head shares the policy's trunk, so this also sets how much the value regression moves the trunk).", range=setting_range("vf_coef"))
    cliprange_value: float = doc(0.2, "PPO: the value head's estimate may move at most this far from its rollout-time value per batch (clipped value loss).", range=setting_range("cliprange_value"))


@dataclass(frozen=True)
class FrequencyConfig:
    alpha: float = doc(1.0, "Traffic weighting: prompt weight proportional to count**alpha (0 = uniform over unique prompts, 1 = proportional to traffic). Default 1 (with floor 0.1): it had the better traffic-weighted validation metric on both tasks of benchmarks/frequency.py. Data without counts is uniform either way.", range="[0, inf)")
    floor: float = doc(0.1, "Minimum share of sampling probability per unique prompt, as a fraction of the uniform share 1/U (0 = no floor, 1 = uniform).", range="[0, 1]")
    mode: FrequencyMode = doc("sample", "How the weights act: 'sample' (prompt sampling probability) or 'loss' (loss weight under uniform sampling).")
    normalize: bool = doc(False, "Count repeats after normalizing whitespace, case and digits, not only exact repeats.")
    head_share: float = doc(0.5, "Head bucket: the most frequent TRAINING prompts, about this share of training traffic. Buckets are ranges of training count: the cut falls between two counts (where the share is nearest), never inside a group of equal counts.", range="[0, 1]")
    torso_share: float = doc(0.3, "Torso bucket: the next training prompts, about this share of training traffic more (cut between counts, nearest); the rest is the tail. Evaluated prompts absent from training are 'unseen'.", range="[0, 1]")
    tail_guard: float = doc(-1.0, "Tail guard: keep the validation metric of the rare prompts (the training tail and prompts unseen in training) within this many points (0-100) of its start value; < 0 = off.", range="[-inf, 100]")
    tail_guard_boost: float = doc(2.0, "Tail guard: factor applied to the tail's weight while the tail is below its floor.", range="[1, inf)")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = doc(1e-5, "Peak learning rate of AdamW.", range="[0, inf)")
    weight_decay: float = doc(0.0, "AdamW weight decay.", range="[0, inf)")
    beta1: float = doc(0.9, "AdamW beta1.", range="[0, 1)")
    beta2: float = doc(0.999, "AdamW beta2.", range="[0, 1)")
    warmup_steps: int = doc(0, "Linear warm-up steps.", range="[0, inf)")
    schedule: Schedule = doc("constant", "Learning-rate schedule after warm-up: 'constant', 'linear' or 'cosine' (decay to 0 at the last step).")
    max_grad_norm: float = doc(1.0, "Clip the gradient norm to this value (0 = off).", range="[0, inf)")
    grad_accum: int = doc(1, "Micro-batches per optimizer step: the batch is split into this many parts (same gradient, less memory).", range="[1, inf)")
    activation_checkpointing: bool = doc(False, "Recompute each layer's activations in the backward instead of keeping them (transformers' gradient checkpointing, non-reentrant): less memory for more compute, and each prompt then runs once per completion in the update (the prompt-shared pass is off). BENCHMARKS.md gives the trade on SmolLM2-135M.")


@dataclass(frozen=True)
class LoraConfig:
    r: int = doc(0, "LoRA rank: train low-rank adapters (through PEFT) instead of every weight; 0 = off (full fine-tuning). The KL reference is then the model with its adapter switched off (or set to lora.init_adapter), not a second copy.", range="[0, inf)")
    alpha: float = doc(16.0, "LoRA scale numerator: the adapter's update B @ A is scaled by alpha / r.", range="(0, inf)")
    dropout: float = doc(0.0, "Dropout on the adapter's input. The RL loop turns every dropout off (sampling and update must see one policy); SFT applies it.", range="[0, 1)")
    target_modules: str = doc("auto", "Modules that get adapters: 'auto' (the attention and MLP projections found in the model, e.g. q/k/v/o/gate/up/down_proj for Llama, c_attn/c_proj/c_fc for GPT-2, q/k/v/o/wi/wo for T5) or a comma list of module names.")
    init_adapter: str = doc("", "Start from a saved LoRA adapter instead of a fresh one: a directory with adapter_model.safetensors (a run's final/adapter or best/adapter; final/ or best/ itself also works), saved on this base model with the same r, alpha and target modules. The KL reference is then this starting policy (base + that adapter, kept as a second, frozen adapter: no copy of the model). The way to follow `rlft sft` with LoRA by `rlft train`: under bf16 the merged export rounds part of the adapter away, the adapter on the base keeps it. Empty: a fresh adapter (B = 0).")


@dataclass(frozen=True)
class RunConfig:
    output_dir: str = doc("runs/rlft", "Run directory: checkpoints, metrics.jsonl, TensorBoard events, resolved config.")
    steps: int = doc(100, "Optimizer steps to train.", range="[1, inf)")
    seed: int = doc(0, "Random seed (model init noise, sampling, data order).", range="[0, inf)")
    device: str = doc("auto", "'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Precision = doc("auto", "'auto' (CUDA: bf16 autocast where the GPU has bf16, else fp32; CPU: a small matmul is timed in both once per machine, cached, and bf16 taken only where it is over 1.2x faster, i.e. with AVX512-BF16/AMX; the choice is printed and written to the run's config.yaml), 'fp32' or 'bf16' (autocast, fp32 master weights).")
    threads: Optional[int] = doc(None, "torch CPU threads; empty: torch's default.", range="[1, inf)")
    release_memory: bool = doc(False, "Linux/glibc: memory blocks of 1 MiB or more come from mmap and go back to the system when freed (mallopt M_MMAP_THRESHOLD), so the process's resident memory follows what is in use rather than its high-water mark; each large allocation then costs fresh pages, which is slow where activations are recomputed. BENCHMARKS.md gives both effects on SmolLM2-135M.")
    eval_every: int = doc(50, "Evaluate on the validation split every N steps (0 = only at the end).", range="[0, inf)")
    save_every: int = doc(50, "Write a checkpoint every N steps (0 = only at the end).", range="[0, inf)")
    keep_checkpoints: int = doc(2, "Keep the newest N step checkpoints (the final one is always kept).", range="[0, inf)")
    resume: bool = doc(False, "Continue from the newest complete checkpoint in output_dir.")
    progress: bool = doc(True, "Show a live progress bar.")
    tensorboard: bool = doc(True, "Write TensorBoard event files (needs the `tensorboard` package; skipped with a warning if absent).")
    skip_bad_reward_limit: int = doc(10, "Stop the run after this many consecutive steps skipped for NaN/inf or failing rewards.", range="[1, inf)")


@dataclass(frozen=True)
class SFTConfig:
    batch_size: int = doc(16, "Examples per optimizer step.", range="[1, inf)")
    epochs: float = doc(1.0, "Passes over the training data; `run.steps` caps the total when it is smaller.", range="(0, inf)")
    patience: int = doc(0, "Stop after this many evaluations (every run.eval_every steps) without a better validation metric; 0 = never. The best model is in best/.", range="[0, inf)")


@dataclass(frozen=True)
class EvalConfig:
    split: str = doc("validation", "Split evaluated during training ('validation') or by `rlft eval` ('test' or 'validation').")
    max_examples: int = doc(64, "Validation during `rlft train`/`rlft sft`: at most this many prompts (first N, deterministic); 0 = no validation. `rlft eval` scores the whole split unless given --max-examples.", range="[0, inf)")
    batch_size: int = doc(16, "Prompts per greedy decoding batch.", range="[1, inf)")
    max_new_tokens: Optional[int] = doc(None, "Longest evaluated completion; empty: rollout.max_new_tokens.", range="[1, inf)")
    metric: Optional[str] = doc(None, "Task metric reported at evaluation; empty: the reward spec.")
    show_samples: int = doc(3, "Example outputs printed and logged at each evaluation.", range="[0, inf)")
    replay: int = doc(0, "`rlft eval`: also score a traffic replay of this many future requests (rlft.eval.replay): new held-out prompts (from eval.split) with the Good-Turing probability n1/N of the training log, else training prompts in proportion to their counts; reported per request, seen vs new, with an exact-match cache baseline. 0 = off.", range="[0, inf)")
    language: Optional[str] = doc(None, "Language of the expected outputs (ISO 639-1: 'en', 'zh', 'fr'): the share of outputs in another language is logged as off_language at every step and evaluation (needs py3langid, the 'monitors' extra). Empty: not monitored. A bundled task sets its own.")


@dataclass(frozen=True)
class RMConfig:
    batch_size: int = doc(16, "`rlft rm train`: preference pairs per optimizer step.", range="[1, inf)")
    epochs: float = doc(1.0, "`rlft rm train`: passes over the training pairs; `run.steps` caps the total when it is smaller.", range="(0, inf)")
    max_length: int = doc(512, "Longest prompt + completion in tokens that the reward model sees, in `rlft rm train` and as an `rm:PATH` reward; a longer pair loses tokens from the left of the longer of the two.", range="[8, inf)")
    ties: TieModelName = doc("davidson", "`rlft rm train`: how pairs labelled `tie` are modelled: 'davidson' (Davidson 1970: P(tie) = nu / (e^(d/2) + e^(-d/2) + nu) for a score difference d) or 'rao_kupper' (Rao and Kupper 1967: a win needs a lead of log theta). Training data without ties is plain Bradley-Terry either way.")
    tie_param: Optional[float] = doc(None, "`rlft rm train`: the tie parameter's starting value (or its value, with learn_tie_param=false): Davidson's nu (> 0) or Rao-Kupper's theta (> 1). Empty: nu = 1, theta = 2.", range="(0, inf)")
    learn_tie_param: bool = doc(True, "`rlft rm train`: learn the tie parameter with the model (maximum likelihood, its own Adam at `tie_lr`).")
    tie_lr: float = doc(0.01, "`rlft rm train`: Adam learning rate of the learned tie parameter (stored as log nu, or log(theta - 1)).", range="(0, inf)")
    calibration_bins: int = doc(10, "`rlft rm train`: bins of the held-out calibration table (predicted P(chosen wins) against the observed rate).", range="[2, inf)")
    normalize: bool = doc(True, "`rm:PATH` rewards: standardize the scores by the running mean and std of every training batch so far (saved in checkpoints, restored on resume); evaluations read the statistics without changing them.")
    score_batch_size: int = doc(16, "`rm:PATH` rewards: completions scored per forward pass.", range="[1, inf)")
    pair_margin: float = doc(0.05, "`rlft rm pairs`: two completions whose reference-metric scores (reward.spec) differ by less than this are written as a tie.", range="[0, inf)")
    pairs_per_prompt: int = doc(1, "`rlft rm pairs`: pairs written per prompt, drawn at random from its rollout.group_size samples (identical texts are never paired).", range="[1, inf)")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    frequency: FrequencyConfig = field(default_factory=FrequencyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rm: RMConfig = field(default_factory=RMConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config, e.g. ``['model.name_or_path', ...]``."""
    keys = []
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def choices(key: str) -> tuple[str, ...]:
    """The allowed values of the setting ``key`` ('algo.kl_mode' -> ('reward', 'loss')); () for a
    setting of free value."""
    section, name = key.split(".")
    return field_choices(field_types(Config)[section], name)


def field_choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of field ``name`` of the dataclass ``cls``: its Literal type's, or the keys
    of its ``doc(choices=)`` registry; () for a field of free value."""
    tp = field_types(cls)[name]
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    registry = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("choices")
    return tuple(registry) if registry is not None else ()


def get(config: Any, dotted: str) -> Any:
    """The value of ``dotted`` ('run.steps') in ``config``."""
    for part in dotted.split("."):
        config = getattr(config, part)
    return config
