"""`rlft pretrain`: build the bundled base model (``rlft-base``) from local text, on a CPU.

The recipe, in order (``main`` runs the steps; each is one function below):

1. Corpus. (a) The *train* splits of the bundled tasks, rendered exactly as RL and SFT feed
   them: ``ids(template.format(prompt)) + ids(reference) + [EOS]`` (prompt and reference are
   tokenized separately, as ``rlft.training.sft.encode_pairs`` does, so the model sees the same
   token boundary it will be sampled from), every reference. (b) Other local text: English
   documentation under /usr/share/doc (no changelogs, no copyright files), the licences in
   /usr/share/common-licenses, the Python standard library's source, and the Chinese side
   (msgstr) of the zh_CN and zh_TW gettext catalogs. Any (b) chunk that contains a validation
   or test prompt or reference of any task is dropped (``LeakFilter``).
2. Tokenizer: byte-level BPE (``tokenizers``), trained on a sample with a fixed Chinese share so
   that common CJK characters get tokens of their own. ``<|endoftext|>`` is EOS and BOS, and
   ``<|pad|>`` a separate pad token; nothing is prepended to a text (no BOS), documents are
   separated by EOS.
3. Model: a small Llama-style decoder (RoPE, RMSNorm, SwiGLU, tied embeddings), dropout 0.
4. Pretraining on packed 256-token rows: AdamW, linear warm-up then cosine decay over a wall
   clock budget (so a busy machine shortens the run rather than overrunning it), held-out loss.
5. Multi-task SFT: each step takes a micro-batch of every task (uniform mixture), loss on the
   reference tokens only.
6. Save bf16 safetensors + tokenizer + loss curves + model card, atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import gzip
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from rlft.config import doc
from rlft.errors import RlftError

ASSETS = Path(__file__).resolve().parent / "assets"
EOS, PAD = "<|endoftext|>", "<|pad|>"
TASK_NAMES = "translation,summarization,dialogue,code_summary"
DOC_ROOT, LICENSE_ROOT = Path("/usr/share/doc"), Path("/usr/share/common-licenses")
LOCALE_ROOT = Path("/usr/share/locale")
CHUNK_CHARS = 3000  # (b) text is cut into chunks of at most this many characters
# Code is cut only before a definition (module level or a method), so a function's docstring and
# body stay in one chunk and the leak filter sees them together.
CODE_BOUNDARY = r"\n(?=(?:    )?(?:def |async def |class |@))"
ANCHOR = 12  # needles at least this long are searched inside text; shorter ones must equal a line


@dataclass(frozen=True)
class PretrainConfig:
    output_dir: str = doc(str(ASSETS / "base-model"), "Where the model, tokenizer, curves and card are written (replaced atomically).")
    tasks: str = doc(TASK_NAMES, "Comma-separated bundled tasks whose train splits enter the corpus and the SFT phase.")
    tasks_dir: str = doc("", "Directory holding <task>/{train,validation,test}.jsonl.gz; empty: the bundled snapshots.")
    task_mb: float = doc(3.0, "Cap per task on its train split in the pretraining corpus, in MB (all of it in SFT).")
    doc_mb: float = doc(4.0, "Cap on English text from /usr/share/doc, in MB of UTF-8.")
    license_mb: float = doc(0.3, "Cap on /usr/share/common-licenses, in MB.")
    code_mb: float = doc(3.0, "Cap on Python standard-library source, in MB.")
    zh_mb: float = doc(4.0, "Cap on Chinese msgstr text from the zh_CN/zh_TW catalogs, in MB.")
    heldout_fraction: float = doc(0.01, "Share of corpus documents (by hash) kept out of training for the held-out loss.")
    vocab_size: int = doc(8192, "BPE vocabulary size, special tokens included.")
    tokenizer_sample_mb: float = doc(6.0, "Characters (in millions) of the corpus sample the tokenizer is trained on.")
    tokenizer_zh_share: float = doc(0.3, "Share of Chinese text in that sample (common CJK characters need it to become tokens).")
    hidden_size: int = doc(256, "Model width.")
    num_layers: int = doc(6, "Decoder layers.")
    num_heads: int = doc(4, "Attention heads (no grouped-query attention).")
    intermediate_size: int = doc(704, "SwiGLU inner width.")
    max_positions: int = doc(1024, "max_position_embeddings of the saved config (RoPE has no position table).")
    seq_len: int = doc(256, "Tokens per packed pretraining row.")
    batch_size: int = doc(8, "Packed rows per pretraining step (small: on a CPU, more updates beat bigger batches).")
    lr: float = doc(1.5e-3, "Peak pretraining learning rate.")
    min_lr_ratio: float = doc(0.1, "The cosine decays to lr * min_lr_ratio.")
    warmup_steps: int = doc(30, "Linear warm-up steps (pretraining).")
    weight_decay: float = doc(0.1, "AdamW weight decay on matrices (not on norms).")
    pretrain_minutes: float = doc(26.0, "Pretraining wall-clock budget; the cosine runs over it (0: steps only).")
    pretrain_steps: int = doc(0, "Pretraining step cap (0: the minutes budget only).")
    eval_every: int = doc(50, "Held-out loss every N pretraining steps.")
    log_every: int = doc(10, "Log the mean training loss every N steps.")
    sft_minutes: float = doc(10.0, "Multi-task SFT wall-clock budget (0 with sft_steps=0: no SFT).")
    sft_steps: int = doc(0, "SFT step cap (0: the minutes budget only).")
    sft_lr: float = doc(5e-4, "Peak SFT learning rate (10 warm-up steps, cosine to 10%).")
    sft_batch_per_task: int = doc(4, "Examples of each task in one SFT step.")
    sft_max_tokens: int = doc(512, "Longest SFT sequence; longer prompts keep their end.")
    eval_examples: int = doc(24, "Validation prompts per task decoded greedily for the card's metrics (0: skip).")
    precision: str = doc("fp32", "'fp32' or 'bf16' (CPU autocast, fp32 master weights). bf16 matmuls are ~30x slower on CPUs without AVX512-BF16.")
    threads: int = doc(2, "torch CPU threads.")
    seed: int = doc(0, "Seed of initialisation, data order and sampling.")


def parse_config(args: list[str]) -> PretrainConfig:
    """``['vocab_size=512', 'pretrain_minutes=0.1']`` -> PretrainConfig (values parsed as YAML)."""
    import typing

    from rlft.config import _coerce, parse_overrides

    types = typing.get_type_hints(PretrainConfig)
    values = {}
    for key, value in parse_overrides(args).items():
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RlftError(f"command line: unknown pretrain setting '{key}'{hint}")
        values[key] = _coerce(value, types[key], key, "command line")
    config = PretrainConfig(**values)
    if config.precision not in ("fp32", "bf16"):
        raise RlftError(f"command line: precision must be 'fp32' or 'bf16', got {config.precision!r}")
    if config.pretrain_minutes <= 0 and config.pretrain_steps <= 0:
        raise RlftError("command line: set pretrain_minutes or pretrain_steps above 0")
    return config


# ---------------------------------------------------------------------------------------------
# 1. Corpus

@dataclass
class Document:
    """One unit of the corpus. Task documents carry a ``completion`` (the reference), tokenized
    separately from ``text`` (the rendered prompt); plain documents have ``completion=None``."""

    source: str
    text: str
    completion: str | None = None


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class LeakFilter:
    """Finds validation/test strings inside corpus text.

    Every needle (a prompt or reference) is compared after whitespace is collapsed and case
    folded (a capitalised copy of a test reference is still a leak). A needle of
    at least ``ANCHOR`` characters is a leak anywhere inside the text: its first ANCHOR
    characters index a dict, a window slides over the text and each hit is verified in full.
    A shorter needle ("OK", "lol", "打开文件") only counts when it is a whole line, since such
    strings occur innocently inside other text.
    """

    def __init__(self, needles: Iterable[str]):
        self.lines: set[str] = set()
        self.by_anchor: dict[str, list[str]] = defaultdict(list)
        for needle in needles:
            flat = self.normalize(needle)
            if not flat:
                continue
            self.lines.add(flat)
            if len(flat) >= ANCHOR:
                self.by_anchor[flat[:ANCHOR]].append(flat)

    @staticmethod
    def normalize(text: str) -> str:
        return squash(text).lower()

    def leaks(self, text: str) -> bool:
        if any(self.normalize(line) in self.lines for line in text.splitlines()):
            return True
        flat, get = self.normalize(text), self.by_anchor.get
        for i in range(len(flat) - ANCHOR + 1):
            found = get(flat[i:i + ANCHOR])
            if found and any(flat.startswith(needle, i) for needle in found):
                return True
        return False


def task_rows(cfg: PretrainConfig, name: str, split: str) -> list[dict[str, Any]]:
    from rlft.tasks.common import read_snapshot

    root = Path(cfg.tasks_dir) / name if cfg.tasks_dir else ASSETS / "tasks" / name
    path = root / f"{split}.jsonl.gz"
    if not path.is_file():
        raise RlftError(f"{path}: task snapshot missing (build it with scripts/build_tasks.py)")
    return list(read_snapshot(path))


def snapshot_hashes(cfg: PretrainConfig) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every snapshot file the build read: the leak filter is only
    valid for these exact splits, so a rebuilt snapshot means a rebuilt model."""
    import hashlib

    out = {}
    for name in task_names(cfg):
        root = Path(cfg.tasks_dir) / name if cfg.tasks_dir else ASSETS / "tasks" / name
        for split in ("train", "validation", "test"):
            out[f"{name}/{split}"] = hashlib.sha256((root / f"{split}.jsonl.gz").read_bytes()).hexdigest()[:16]
    return out


def task_names(cfg: PretrainConfig) -> list[str]:
    return [name.strip() for name in cfg.tasks.split(",") if name.strip()]


def held_out_needles(row: dict[str, Any]) -> list[str]:
    """What a held-out row must not leak: its prompt, its references, and the prompt without its
    first line (a code prompt is a definition with its docstring removed, so only its body
    appears verbatim in the source file)."""
    body = "\n".join(line for line in row["prompt"].split("\n")[1:] if line.strip() != "# ...")
    return [row["prompt"], *row["references"], *([body] if len(body) >= 4 * ANCHOR else [])]


def task_documents(cfg: PretrainConfig) -> tuple[list[Document], LeakFilter]:
    """(a): one Document per (train prompt, reference), at most ``task_mb`` per task (a hash
    subset of prompts); and the filter of every validation and test row of the same tasks."""
    from rlft.data.templates import render_prompt
    from rlft.tasks import get_task
    from rlft.tasks.common import unit_hash

    docs, needles = [], []
    for name in task_names(cfg):
        template, size = get_task(name).template, 0
        rows = sorted(task_rows(cfg, name, "train"), key=lambda r: unit_hash(r["prompt"], "pretrain:"))
        for row in rows:
            if size >= cfg.task_mb * 1e6:
                break
            text = render_prompt(template, row["prompt"])
            for ref in row["references"]:
                docs.append(Document(f"task:{name}", text, ref))
                size += len((text + ref).encode("utf-8"))
        for split in ("validation", "test"):
            for row in task_rows(cfg, name, split):
                needles += held_out_needles(row)
    return docs, LeakFilter(needles)


def chunks(text: str, limit: int = CHUNK_CHARS, boundary: str = r"\n\s*\n") -> Iterator[str]:
    """Pieces of ``text`` between ``boundary`` matches, grouped into chunks of at most ``limit``
    characters (a longer piece is cut at line ends, then hard)."""
    buf = ""
    for para in re.split(boundary, text):
        para = para.strip("\n")
        if not para.strip():
            continue
        if buf and len(para) > limit:
            yield buf
            buf = ""
        while len(para) > limit:
            cut = para.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            yield para[:cut]
            para = para[cut:].lstrip("\n")
        if buf and len(buf) + len(para) + 2 > limit:
            yield buf
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
    if buf:
        yield buf


def _read_text(path: Path) -> str | None:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in text[:20000])
    return text if text and printable >= 0.97 * min(len(text), 20000) else None


_DOC_FILE = re.compile(r"^(readme|news|faq|todo|thanks|bugs|hacking|usage|.*\.(txt|md|rst))(\.gz)?$", re.I)


def doc_files() -> list[Path]:
    """English plain-text documentation: README/NEWS/FAQ/... and *.txt/*.md/*.rst, no
    changelogs or copyright files (which repeat the licences), translated docs left out."""
    if not DOC_ROOT.is_dir():
        return []
    found = []
    for path in DOC_ROOT.rglob("*"):
        name = path.name.lower()
        if path.is_symlink() or not path.is_file() or "changelog" in name or "copyright" in name:
            continue
        if _DOC_FILE.match(path.name) and not re.search(r"[._-](de|fr|es|ja|ru|zh|it|pt|ko)\b", name):
            found.append(path)
    return found


def code_files() -> list[Path]:
    """Standard-library sources outside the test suites (the code_summary task's skip list)."""
    from rlft.tasks.code_summary import SKIP_PARTS, stdlib_dir

    root = stdlib_dir()
    return [p for p in root.rglob("*.py")
            if not any(part in SKIP_PARTS or part.startswith("config-") for part in p.relative_to(root).parts[:-1])]


def capped_chunks(source: str, paths: list[Path], cap_mb: float, leak: LeakFilter,
                  dropped: Counter, boundary: str = r"\n\s*\n") -> list[Document]:
    """Chunks of ``paths`` (in a seeded-hash order, so the cap takes a spread of packages rather
    than the alphabet's start) until ``cap_mb`` of UTF-8; leaking chunks are counted and dropped."""
    from rlft.tasks.common import sha256_hex

    docs, size, cap = [], 0, int(cap_mb * 1e6)
    for path in sorted(paths, key=lambda p: sha256_hex(str(p))):
        text = _read_text(path) if size < cap else None
        for chunk in chunks(text or "", boundary=boundary):
            if leak.leaks(chunk):
                dropped[source] += 1
                continue
            docs.append(Document(source, chunk))
            size += len(chunk.encode("utf-8"))
        if size >= cap:
            break
    return docs


_MNEMONIC = re.compile(r"\s*[(（][_&][A-Za-z0-9][)）]")


def chinese_documents(cap_mb: float, leak: LeakFilter, dropped: Counter) -> list[Document]:
    """The msgstr side of the zh_CN and zh_TW catalogs, one document per catalog (one message a
    line, mnemonics removed). A message is dropped when its English msgid is a validation/test
    translation prompt or its Chinese text leaks, so no held-out pair is seen even in halves."""
    from rlft.tasks.translation import clean_pair, read_mo

    docs, size, cap = [], 0, int(cap_mb * 1e6)
    paths = sorted((LOCALE_ROOT / "zh_CN" / "LC_MESSAGES").glob("*.mo")) + \
        sorted((LOCALE_ROOT / "zh_TW" / "LC_MESSAGES").glob("*.mo"))
    for path in paths:
        if path.is_symlink() or size >= cap:
            continue
        try:
            entries = read_mo(path.read_bytes())
        except (OSError, ValueError):
            continue
        lines = []
        for msgid, msgstr in entries:
            if not msgid or not re.search(r"[\u3400-\u9fff]", msgstr):
                continue
            cleaned = clean_pair(msgid, msgstr)
            english = leak.normalize(cleaned[0] if cleaned else msgid.split("\x04")[-1])
            text = "\n".join(_MNEMONIC.sub("", form).strip() for form in msgstr.split("\x00"))
            if english in leak.lines or leak.leaks(text):
                dropped["zh"] += 1
                continue
            lines.append(text)
        if lines:
            docs.append(Document("zh", "\n".join(lines)))
            size += len(docs[-1].text.encode("utf-8"))
    return docs


def build_corpus(cfg: PretrainConfig) -> tuple[list[Document], dict[str, Any]]:
    """All documents of the corpus and a report of what was dropped for leaking."""
    docs, leak = task_documents(cfg)
    dropped: Counter = Counter()
    if cfg.doc_mb > 0:
        docs += capped_chunks("doc", doc_files(), cfg.doc_mb, leak, dropped)
    if cfg.license_mb > 0 and LICENSE_ROOT.is_dir():
        licences = [p for p in LICENSE_ROOT.iterdir() if p.is_file() and not p.is_symlink()]
        docs += capped_chunks("license", licences, cfg.license_mb, leak, dropped)
    if cfg.code_mb > 0:
        docs += capped_chunks("code", code_files(), cfg.code_mb, leak, dropped, CODE_BOUNDARY)
    if cfg.zh_mb > 0:
        docs += chinese_documents(cfg.zh_mb, leak, dropped)
    return docs, {"leak_needles": len(leak.lines), "leak_dropped": dict(dropped)}


# ---------------------------------------------------------------------------------------------
# 2. Tokenizer

def tokenizer_sample(docs: list[Document], cfg: PretrainConfig) -> list[str]:
    """A seeded sample of ``tokenizer_sample_mb`` million characters, ``tokenizer_zh_share``
    of them from Chinese sources (the zh catalogs and the translation references)."""
    rng = random.Random(cfg.seed)
    zh, other = [], []
    for d in docs:
        for text in (d.text, d.completion):
            if text:
                (zh if d.source == "zh" or (d.completion is text and d.source == "task:translation") else other).append(text)
    budget = int(cfg.tokenizer_sample_mb * 1e6)
    sample = []
    for pool, share in ((zh, cfg.tokenizer_zh_share), (other, 1 - cfg.tokenizer_zh_share)):
        rng.shuffle(pool)
        used = 0
        for text in pool:
            if used >= share * budget:
                break
            sample.append(text)
            used += len(text)
    return sample


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int = 1024) -> Any:
    """Byte-level BPE (GPT-2 pre-tokenization), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # No BOS is prepended: documents are separated by EOS in pretraining, and prompts start
    # the context as they do in SFT/RL; bos_token is set (to EOS) only for code that asks for one.
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   padding_side="left", model_max_length=max_length,
                                   clean_up_tokenization_spaces=False)


def encode_documents(tokenizer: Any, docs: list[Document]) -> list[list[int]]:
    """Token ids of each document, EOS-terminated; a task document is ids(prompt) + ids(reference)."""
    def ids(texts: list[str]) -> list[list[int]]:  # the Rust tokenizer: batched, no length warning
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]

    texts = ids([d.text for d in docs])
    with_completion = [i for i, d in enumerate(docs) if d.completion is not None]
    completions = dict(zip(with_completion, ids([docs[i].completion for i in with_completion])))
    eos = tokenizer.eos_token_id
    return [t + completions.get(i, []) + [eos] for i, t in enumerate(texts)]


def cjk_coverage(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """How many CJK characters are single tokens, and the share of CJK occurrences in ``texts``
    that such characters cover."""
    vocab = tokenizer.get_vocab()
    singles = set()
    for token in vocab:
        text = tokenizer.convert_tokens_to_string([token])
        if len(text) == 1 and "\u3400" <= text <= "\u9fff":
            singles.add(text)
    seen = [ch for t in texts for ch in t if "\u3400" <= ch <= "\u9fff"]
    covered = sum(ch in singles for ch in seen) / len(seen) if seen else 0.0
    multi_char = sum(1 for token in vocab if len(re.findall(r"[\u3400-\u9fff]", tokenizer.convert_tokens_to_string([token]))) > 1)
    return {"single_cjk_tokens": len(singles), "multi_cjk_tokens": multi_char, "validation_cjk_covered": covered}


# ---------------------------------------------------------------------------------------------
# 3-4. Model and pretraining

def build_model(cfg: PretrainConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def pack(token_docs: list[list[int]], seq_len: int) -> Any:
    """Concatenate EOS-terminated documents and cut into rows of ``seq_len`` (the tail is dropped).
    Attention crosses document boundaries, as in GPT-2-style packing; EOS marks them."""
    import torch

    flat = [t for doc_ids in token_docs for t in doc_ids]
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)  # (N, T)


def lr_at(step: int, progress: float, warmup: int, warm_progress: float, peak: float, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from peak to peak*min_ratio over the rest
    of ``progress`` (0..1, the larger of the step and wall-clock fractions)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (progress - warm_progress) / max(1e-9, 1.0 - warm_progress))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    import torch

    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]  # RMSNorm gains: no decay
    return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                              {"params": vectors, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


class Budget:
    """Progress in 0..1 of a phase bounded by steps, minutes, or both (whichever ends first)."""

    def __init__(self, steps: int, minutes: float):
        self.steps, self.seconds, self.start = steps, minutes * 60, time.time()

    def progress(self, step: int) -> float:
        by_steps = step / self.steps if self.steps > 0 else 0.0
        by_time = (time.time() - self.start) / self.seconds if self.seconds > 0 else 0.0
        return max(by_steps, by_time)

    def elapsed(self) -> float:
        return time.time() - self.start


def heldout_loss(model: Any, rows: Any, batch_size: int, autocast: bool) -> float:
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for i in range(0, len(rows), batch_size):
            batch = rows[i:i + batch_size]
            total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
    model.train()
    return total / max(1, len(rows))


def pretrain(model: Any, rows: Any, heldout: Any, cfg: PretrainConfig, log: Any) -> dict[str, Any]:
    """Next-token pretraining on packed rows, one pass in a seeded order (repeated if the
    budget outlasts it). Logs the training loss and the held-out loss."""
    import torch

    autocast = cfg.precision == "bf16"
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed))
    budget, step, warm_progress, window = Budget(cfg.pretrain_steps, cfg.pretrain_minutes), 0, 0.0, []
    model.train()
    while (progress := budget.progress(step)) < 1.0:
        if step == cfg.warmup_steps:
            warm_progress = progress
        lr = lr_at(step, progress, cfg.warmup_steps, warm_progress, cfg.lr, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = [order[(step * cfg.batch_size + j) % len(rows)] for j in range(cfg.batch_size)]
        batch = rows[torch.stack(idx)]  # (B, T)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(loss.item())
        if step % cfg.log_every == 0:
            log({"phase": "pretrain", "step": step, "loss": sum(window) / len(window), "lr": lr,
                 "tokens": step * cfg.batch_size * cfg.seq_len, "elapsed_s": round(budget.elapsed(), 1)})
            window = []
        if cfg.eval_every and step % cfg.eval_every == 0 and len(heldout):
            log({"phase": "pretrain", "step": step, "heldout_loss": heldout_loss(model, heldout, cfg.batch_size, autocast),
                 "elapsed_s": round(budget.elapsed(), 1)})
    final = heldout_loss(model, heldout, cfg.batch_size, autocast) if len(heldout) else float("nan")
    if not (cfg.eval_every and step % cfg.eval_every == 0):
        log({"phase": "pretrain", "step": step, "heldout_loss": final, "elapsed_s": round(budget.elapsed(), 1)})
    return {"steps": step, "tokens": step * cfg.batch_size * cfg.seq_len, "wall_s": round(budget.elapsed(), 1),
            "heldout_loss": final, "epochs": step * cfg.batch_size / max(1, len(rows))}


# ---------------------------------------------------------------------------------------------
# 5. Multi-task SFT

def sft_examples(cfg: PretrainConfig, tokenizer: Any, split: str) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Per task: (prompt ids, reference ids + EOS) for every (prompt, reference) of the split."""
    from rlft.data.templates import render_prompt
    from rlft.tasks import get_task

    out = {}
    for name in task_names(cfg):
        rows = task_rows(cfg, name, split)
        prompts = [render_prompt(get_task(name).template, r["prompt"]) for r in rows for _ in r["references"]]
        refs = [ref for r in rows for ref in r["references"]]
        p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(refs, add_special_tokens=False)["input_ids"]
        out[name] = [(p, r + [tokenizer.eos_token_id]) for p, r in zip(p_ids, r_ids)]
    return out


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int, max_tokens: int) -> tuple[Any, Any, Any]:
    """Right-padded (input_ids, attention_mask, labels), labels -100 except on reference tokens;
    an overlong prompt keeps its end (where the template's cue is)."""
    import torch

    seqs = []
    for prompt, ref in pairs:
        ref = ref[: max_tokens // 2]
        prompt = prompt[-(max_tokens - len(ref)):]
        seqs.append((prompt + ref, [-100] * len(prompt) + ref))
    T = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)], labels[i, : len(s)] = torch.tensor(s), 1, torch.tensor(lab)
    return ids, mask, labels


def reference_loss(model: Any, examples: dict[str, list], cfg: PretrainConfig, pad_id: int, n: int = 32) -> dict[str, float]:
    """Mean per-token loss on the references of the first ``n`` examples of each task."""
    import torch

    model.eval()
    out = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        for name, pairs in examples.items():
            losses = []
            for i in range(0, min(n, len(pairs)), 8):
                ids, mask, labels = collate(pairs[i:i + 8], pad_id, cfg.sft_max_tokens)
                losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
            out[name] = sum(losses) / max(1, len(losses))
    model.train()
    return out


def multitask_sft(model: Any, train: dict[str, list], cfg: PretrainConfig, pad_id: int, log: Any) -> dict[str, Any]:
    """Each step: one micro-batch of ``sft_batch_per_task`` random examples from every task;
    the step's loss is the mean of the task losses, so each task weighs the same whatever its
    size or length. Warm-up 10 steps, then cosine to 10% over the budget."""
    import torch

    autocast = cfg.precision == "bf16"
    optimizer = make_optimizer(model, cfg.sft_lr, cfg.weight_decay)
    rng = random.Random(cfg.seed)
    budget, step, warm_progress = Budget(cfg.sft_steps, cfg.sft_minutes), 0, 0.0
    model.train()
    while (progress := budget.progress(step)) < 1.0:
        warm_progress = progress if step == 10 else warm_progress
        lr = lr_at(step, progress, 10, warm_progress, cfg.sft_lr, 0.1)
        for group in optimizer.param_groups:
            group["lr"] = lr
        task_losses = {}
        for name, pairs in train.items():
            ids, mask, labels = collate(rng.sample(pairs, min(cfg.sft_batch_per_task, len(pairs))), pad_id, cfg.sft_max_tokens)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(train)
            loss.backward()
            task_losses[name] = loss.item() * len(train)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        log({"phase": "sft", "step": step, "loss": sum(task_losses.values()) / len(task_losses), "lr": lr,
             "task_loss": task_losses, "elapsed_s": round(budget.elapsed(), 1)})
    return {"steps": step, "wall_s": round(budget.elapsed(), 1)}


# ---------------------------------------------------------------------------------------------
# 6. Greedy samples, saving, model card

def greedy_samples(model: Any, tokenizer: Any, cfg: PretrainConfig) -> dict[str, dict[str, Any]]:
    """Greedy completions of the first ``eval_examples`` validation prompts of each task, scored
    with the task's metric (the same prompts the RL runs evaluate on first)."""
    import torch

    from rlft.data.templates import render_prompt
    from rlft.rewards.metrics import METRICS
    from rlft.tasks import get_task

    model.eval()
    out = {}
    for name in task_names(cfg):
        task, rows = get_task(name), task_rows(cfg, name, "validation")[: cfg.eval_examples]
        hyps = []
        for i in range(0, len(rows), 8):
            prompts = [render_prompt(task.template, r["prompt"]) for r in rows[i:i + 8]]
            keep = cfg.sft_max_tokens - task.max_new_tokens  # prompts keep their end, like fit_prompt
            ids = [p[-keep:] for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")  # left padding
            with torch.no_grad():
                gen = model.generate(**batch, max_new_tokens=task.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            hyps += tokenizer.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        refs = [r["references"] for r in rows]
        score = METRICS[task.metric].corpus(hyps, refs) if rows else float("nan")
        out[name] = {"metric": task.metric, "score": score, "n": len(rows), "template": task.template,
                     "samples": [(r["prompt"], h, r["references"][0]) for r, h in zip(rows[:3], hyps)]}
    model.train()
    return out


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if r["phase"] == "pretrain" and "loss" in r]
    held = [r for r in records if r["phase"] == "pretrain" and "heldout_loss" in r]
    left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (mean of log window)")
    left.plot([r["step"] for r in held], [r["heldout_loss"] for r in held], "o-", label="held-out")
    left.set(title="pretraining", xlabel="step", ylabel="loss (nats/token)")
    left.legend()
    sft = [r for r in records if r["phase"] == "sft"]
    for name in sorted({k for r in sft for k in r["task_loss"]}):
        ys = [r["task_loss"][name] for r in sft]
        smooth = [sum(ys[max(0, i - 19):i + 1]) / len(ys[max(0, i - 19):i + 1]) for i in range(len(ys))]
        right.plot([r["step"] for r in sft], smooth, label=name)
    right.set(title="multi-task SFT (reference tokens, 20-step mean)", xlabel="step", ylabel="loss")
    if sft:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_atomic(out_dir: Path, write: Any) -> None:
    """Call ``write(tmp_dir)`` and then swap ``tmp_dir`` into ``out_dir``, so a crash never leaves
    a half-written model where ``rlft-base`` is looked up."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = out_dir.with_name(out_dir.name + ".tmp"), out_dir.with_name(out_dir.name + ".old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _clip(text: str, n: int = 160) -> str:
    text = squash(text).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 3] + "..."


def _budget(minutes: float, steps: int) -> str:
    parts = ([f"a {minutes:g}-minute wall-clock budget"] if minutes > 0 else []) + ([f"{steps} steps"] if steps > 0 else [])
    return " or ".join(parts) + (" (whichever ends first)" if len(parts) == 2 else "")


def model_card(s: dict[str, Any]) -> str:
    """The README.md of the bundled model, from the statistics the build collected."""
    cfg, m = s["config"], s["model"]
    comp = _table(["source", "documents", "characters", "UTF-8 MB", "tokens", "chars/token", "dropped (leak)"],
                  [[k, v["docs"], v["chars"], f"{v['bytes'] / 1e6:.2f}", v["tokens"], f"{v['chars'] / max(1, v['tokens']):.2f}",
                    s["corpus"]["leak_dropped"].get(k, 0)] for k, v in s["corpus"]["sources"].items()])
    tasks = _table(["task", "val. ref. loss after pretraining", "after SFT", f"greedy {cfg['eval_examples']} val.: metric", "score"],
                   [[k, f"{s['ref_loss_pretrain'][k]:.3f}", f"{s['ref_loss_sft'][k]:.3f}", v["metric"], f"{v['score']:.1f}"]
                    for k, v in s["samples"].items()])
    samples = "\n\n".join(f"**{k}** (template `{json.dumps(v['template'])[1:-1]}`)\n\n" + _table(
        ["prompt", "greedy output", "reference"], [[_clip(p), _clip(h) or "(empty)", _clip(r)] for p, h, r in v["samples"]])
        for k, v in s["samples"].items())
    pre, sft = s["pretrain"], s["sft"]
    return f"""# rlft-base

The small base model bundled with rlft (`model.name_or_path=rlft-base`), built on a CPU by the
project's own recipe (`src/rlft/pretrain.py`) from local text only. It exists so that every bundled
task's RL run starts from a model that already knows the task formats; it is far too small and
briefly trained to be useful on its own. Everything below was written by the build itself.

Built with: `{s['command']}` ({s['started']}, torch {s['torch']}, transformers {s['transformers']},
{cfg['threads']} CPU threads, {cfg['precision']} training, weights saved in bf16).

## Architecture

`LlamaForCausalLM`: {m['params']:,} parameters ({m['params_no_embed']:,} without the tied embedding),
hidden size {cfg['hidden_size']}, {cfg['num_layers']} layers, {cfg['num_heads']} heads (head dim
{cfg['hidden_size'] // cfg['num_heads']}), SwiGLU inner size {cfg['intermediate_size']}, RMSNorm, RoPE (theta
10000, `max_position_embeddings` {cfg['max_positions']}), tied input/output embeddings, no dropout.

## Tokenizer

Byte-level BPE (GPT-2 pre-tokenization, `tokenizers`), {s['tokenizer']['vocab']} tokens, trained on
{cfg['tokenizer_sample_mb']}M characters of the corpus of which {cfg['tokenizer_zh_share']:.0%} Chinese. Special tokens:
`<|endoftext|>` (id {s['tokenizer']['eos_id']}: EOS, also set as BOS) and `<|pad|>` (id {s['tokenizer']['pad_id']}: padding, distinct
from EOS so batched RL can tell padding from a finished completion). No BOS is prepended to text
(documents are separated by EOS); padding side is left. {s['tokenizer']['single_cjk_tokens']} CJK characters have a
token of their own (plus {s['tokenizer']['multi_cjk_tokens']} multi-character Chinese tokens); they cover
{s['tokenizer']['validation_cjk_covered']:.1%} of the CJK characters in the translation validation references.

## Corpus

{comp}

- `task:*`: the train split of each bundled task, each (prompt, reference) pair rendered as the
  task template applied to the prompt, then the reference, then EOS, tokenized as prompt ids +
  reference ids (the boundary RL samples at). All references are used.
- `doc`: README/NEWS/FAQ/TODO/*.txt/*.md/*.rst under /usr/share/doc (no changelogs, no
  copyright files), `license`: /usr/share/common-licenses, `code`: the Python standard library
  outside its test suites, `zh`: the msgstr side of /usr/share/locale/zh_CN and zh_TW catalogs.
  Text is cut at blank lines (code: before a `def`/`class`/decorator) into chunks of at most {CHUNK_CHARS} characters; files are taken in a
  hash order until each source's cap.
- Leak filter: the {s['corpus']['leak_needles']:,} distinct validation and test prompts and references of
  all tasks (whitespace collapsed, case folded). A chunk is dropped when it contains one of at least {ANCHOR}
  characters anywhere or has a line equal to a shorter one; a catalog message is dropped when its
  English msgid is a held-out translation prompt or its Chinese text leaks. The train splits are
  used as they are.
- {cfg['heldout_fraction']:.0%} of the documents (by hash) are held out for the held-out loss ({s['heldout_rows']} rows).
- Task snapshots read (sha256 prefix; the leak filter holds for exactly these splits, so a rebuilt
  snapshot calls for a rebuilt model): {", ".join(f"`{k}` {v}" for k, v in s['snapshots'].items())}.

## Training

| phase | wall seconds | steps | tokens | notes |
| --- | ---: | ---: | ---: | --- |
| corpus + tokenizer | {s['prep_s']:.0f} | | | leak filtering, BPE training, tokenization |
| pretraining | {pre['wall_s']:.0f} | {pre['steps']} | {pre['tokens']:,} | {pre['epochs']:.2f} passes over {s['train_rows']} rows of {cfg['seq_len']} tokens |
| multi-task SFT | {sft['wall_s']:.0f} | {sft['steps']} | | {cfg['sft_batch_per_task']} examples x {len(s['samples'])} tasks per step |

Pretraining: packed rows of {cfg['seq_len']} tokens, batch {cfg['batch_size']} rows, AdamW (betas 0.9/0.95,
weight decay {cfg['weight_decay']} on matrices), peak lr {cfg['lr']}, {cfg['warmup_steps']} warm-up steps then cosine to
{cfg['min_lr_ratio']:.0%} over {_budget(cfg['pretrain_minutes'], cfg['pretrain_steps'])}, gradient clipping 1.0, fp32 master
weights. Final training loss {s['final_train_loss']:.3f}, held-out loss {pre['heldout_loss']:.3f} (nats/token).
SFT: every step one micro-batch of each task (uniform mixture), loss on reference tokens only
(prompt masked), peak lr {cfg['sft_lr']}, cosine over {_budget(cfg['sft_minutes'], cfg['sft_steps'])}, sequences up to
{cfg['sft_max_tokens']} tokens (prompts keep their end).

![loss curves](loss_curves.png)

The log is in `training_log.jsonl` (one JSON object per logged step).

## Per task

{tasks}

## Greedy samples (validation prompts, first {len(next(iter(s['samples'].values()))['samples'])} per task)

{samples}
"""


def save_model(model: Any, tokenizer: Any, stats: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> None:
    import torch
    from transformers import GenerationConfig

    def write(tmp: Path) -> None:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        model.to(torch.float32)
        # Stored in bf16 (half the size), but loaded in fp32 by default (`dtype="auto"` reads this
        # field): bf16 matmuls are many times slower than fp32 on CPUs without AVX512-BF16.
        config = json.loads((tmp / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=64).save_pretrained(tmp)
        (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        plot_curves(records, tmp / "loss_curves.png")
        (tmp / "README.md").write_text(model_card(stats), encoding="utf-8")

    save_atomic(out_dir, write)


# ---------------------------------------------------------------------------------------------
# The command

def corpus_stats(docs: list[Document], token_docs: list[list[int]]) -> dict[str, dict[str, int]]:
    stats: dict[str, Counter] = defaultdict(Counter)
    for d, ids in zip(docs, token_docs):
        text = d.text + (d.completion or "")
        stats[d.source].update(docs=1, chars=len(text), bytes=len(text.encode("utf-8")), tokens=len(ids))
    return {k: dict(v) for k, v in sorted(stats.items())}


def split_heldout(docs: list[Document], token_docs: list[list[int]], cfg: PretrainConfig) -> tuple[list, list]:
    """Hash split of documents into (train, held-out), each in a seeded order (the corpus lists
    sources one after another, so an unshuffled held-out slice would be one source only)."""
    from rlft.tasks.common import unit_hash

    train, held = [], []
    for d, ids in zip(docs, token_docs):
        (held if unit_hash(d.text + (d.completion or ""), "heldout:") < cfg.heldout_fraction else train).append(ids)
    rng = random.Random(cfg.seed)
    rng.shuffle(train)
    rng.shuffle(held)
    return train, held


def main(args: list[str]) -> int:
    """``rlft pretrain [key=value ...]``: build the base model as PretrainConfig describes."""
    import torch
    import transformers

    cfg = parse_config(args)
    torch.set_num_threads(cfg.threads)
    records: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        records.append(record)
        if "heldout_loss" in record or record["step"] % (cfg.log_every * (5 if record["phase"] == "sft" else 1)) == 0:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()
                              if k != "task_loss"}), flush=True)

    t0 = time.time()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY",) if k in os.environ)
    stats: dict[str, Any] = {"config": dataclasses.asdict(cfg), "command": " ".join([env, "rlft pretrain", *args]).strip(),
                             "started": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
                             "transformers": transformers.__version__}
    docs, stats["corpus"] = build_corpus(cfg)
    stats["snapshots"] = snapshot_hashes(cfg)
    print(f"corpus: {len(docs)} documents ({time.time() - t0:.0f}s)", flush=True)
    tokenizer = train_tokenizer(tokenizer_sample(docs, cfg), cfg.vocab_size, cfg.max_positions)
    token_docs = encode_documents(tokenizer, docs)
    stats["corpus"]["sources"] = corpus_stats(docs, token_docs)
    zh_refs = [r for name in task_names(cfg) if name == "translation"
               for row in task_rows(cfg, name, "validation") for r in row["references"]]
    stats["tokenizer"] = {"vocab": len(tokenizer), "eos_id": tokenizer.eos_token_id, "pad_id": tokenizer.pad_token_id,
                          **cjk_coverage(tokenizer, zh_refs)}
    train_docs, held_docs = split_heldout(docs, token_docs, cfg)
    rows, heldout = pack(train_docs, cfg.seq_len), pack(held_docs, cfg.seq_len)[:32]
    stats.update(train_rows=len(rows), heldout_rows=len(heldout), prep_s=time.time() - t0)
    print(f"tokenizer + packing: {len(rows)} rows, {len(heldout)} held out ({time.time() - t0:.0f}s)", flush=True)

    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    stats["model"] = {"params": n_params, "params_no_embed": n_params - model.get_input_embeddings().weight.numel()}
    stats["pretrain"] = pretrain(model, rows, heldout, cfg, log)
    window = [r["loss"] for r in records if r["phase"] == "pretrain" and "loss" in r][-3:]
    stats["final_train_loss"] = sum(window) / len(window) if window else float("nan")
    val = sft_examples(cfg, tokenizer, "validation")
    stats["ref_loss_pretrain"] = reference_loss(model, val, cfg, tokenizer.pad_token_id)
    if cfg.sft_minutes > 0 or cfg.sft_steps > 0:
        stats["sft"] = multitask_sft(model, sft_examples(cfg, tokenizer, "train"), cfg, tokenizer.pad_token_id, log)
    else:
        stats["sft"] = {"steps": 0, "wall_s": 0.0}
    stats["ref_loss_sft"] = reference_loss(model, val, cfg, tokenizer.pad_token_id)
    stats["samples"] = greedy_samples(model, tokenizer, cfg) if cfg.eval_examples > 0 else {}
    save_model(model, tokenizer, stats, records, Path(cfg.output_dir))
    summary = {k: stats[k] for k in ("pretrain", "sft", "ref_loss_pretrain", "ref_loss_sft", "tokenizer")}
    print(json.dumps(summary, indent=1, default=str), flush=True)
    print(f"saved {cfg.output_dir} ({time.time() - t0:.0f}s in all)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
