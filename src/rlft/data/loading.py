"""Read prompt datasets (JSONL, CSV, Parquet, `datasets` directories, hub names) into Examples.

Loading is two stages so each can be tested alone: ``iter_rows`` streams raw records with the
1-based line number a user would look up in their file, and ``rows_to_examples`` validates
them and merges repeated prompts (``rlft.data.counting.PromptCounter``, the one merge). Every data
error names the file, the line and the field.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from rlft.config import DataConfig
from rlft.data.counting import PromptCounter
from rlft.data.example import Example
from rlft.errors import RlftError, where

SUPPORTED_FORMATS = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet")
WEIGHT_FIELD = "weight"

# A hub dataset name is `name` or `org/name`; anything with a data-file suffix is a path.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_FILE_SUFFIX = re.compile(r"\.(jsonl|json|csv|tsv|parquet|gz|txt|arrow)$", re.IGNORECASE)

# Summarization sources can exceed csv's default 128 KiB field limit; 2**31 - 1 is the most
# every platform's C long accepts.
csv.field_size_limit(2**31 - 1)


# ---------------------------------------------------------------------------- raw rows


def iter_rows(source: str, *, hub_split: str = "train") -> Iterator[tuple[int, dict]]:
    """Stream ``(line, record)`` pairs from a file, a `datasets` directory or a hub dataset.

    ``line`` is 1-based: the file line for JSONL, the physical line where the record starts for
    CSV (the header is line 1), and row index + 1 for Parquet and `datasets`.
    """
    if os.path.isdir(source):
        yield from _iter_saved_dataset(source, hub_split)
        return
    if not os.path.exists(source):
        if _looks_like_hub_name(source):
            yield from _iter_hub_dataset(source, hub_split)
            return
        raise RlftError(f"{source}: no such file or directory")
    name = source.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        yield from _iter_jsonl(source)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _iter_csv(source)
    elif name.endswith(".parquet"):
        yield from _iter_parquet(source)
    else:
        raise RlftError(f"{source}: unsupported format; supported: {', '.join(SUPPORTED_FORMATS)}, "
                        "a `datasets` directory or a hub dataset name")


def _looks_like_hub_name(source: str) -> bool:
    if not _HUB_NAME.fullmatch(source) or _FILE_SUFFIX.search(source):
        return False
    # `data/train` with a local `data/` is a mistyped path, not the hub dataset `data/train`.
    return "/" not in source or not os.path.isdir(source.split("/", 1)[0])


def _open_text(path: str):
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the header.
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


@contextmanager
def _read_errors(path: str):
    """Turn decoding failures into one-line user errors."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise RlftError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (gzip.BadGzipFile, EOFError) as err:
        raise RlftError(f"{path}: not a valid gzip file ({_first_line(err)})") from None


def jsonl_text(rows: Iterable[dict]) -> str:
    """Rows as JSON Lines text, one object per line, non-ASCII kept (what ``_iter_jsonl`` reads back)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    with _read_errors(path), _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RlftError(f"{where(path, line_no)}: malformed JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise RlftError(f"{where(path, line_no)}: expected a JSON object, got {_json_type(record)}")
            yield line_no, record


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _iter_csv(path: str) -> Iterator[tuple[int, dict]]:
    with _read_errors(path), _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return
            last_line = reader.line_num
            for values in reader:
                # reader.line_num counts physical lines, so a quoted multi-line field still
                # reports the line where its record starts.
                start, last_line = last_line + 1, reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise RlftError(f"{where(path, start)}: expected {len(header)} columns as in the header, "
                                    f"got {len(values)}")
                yield start, dict(zip(header, values))
        except csv.Error as err:
            raise RlftError(f"{where(path, reader.line_num)}: malformed CSV ({err})") from None


def _optional(module: str, what: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RlftError(f"reading {what} needs the '{module.split('.')[0]}' package; "
                        "pip install 'rlft[data]'") from None


def _iter_parquet(path: str) -> Iterator[tuple[int, dict]]:
    pq = _optional("pyarrow.parquet", "Parquet files")

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError variants
        raise RlftError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    index = 0
    # Batches keep memory bounded by the batch, not the file.
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            index += 1
            yield index, record


def _iter_saved_dataset(path: str, split: str) -> Iterator[tuple[int, dict]]:
    datasets = _optional("datasets", "`datasets` directories")

    try:
        data = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise RlftError(f"{path}: not a `datasets` directory saved with save_to_disk ({_first_line(err)})") from None
    yield from _iter_dataset(data, path, split)


def _iter_hub_dataset(name: str, split: str) -> Iterator[tuple[int, dict]]:
    datasets = _optional("datasets", "hub datasets")

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as err:  # network, missing dataset, missing split: all user-facing
        raise RlftError(f"{name}: could not load hub dataset split '{split}' ({_first_line(err)})") from None
    yield from _iter_dataset(data, name, split)


def _iter_dataset(data: Any, source: str, split: str) -> Iterator[tuple[int, dict]]:
    import datasets

    if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in data:
            raise RlftError(f"{source}: no split '{split}' (available: {', '.join(data.keys())}); set data.hub_split")
        data = data[split]
    for index, record in enumerate(data, start=1):
        yield index, dict(record)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ---------------------------------------------------------------------------- validation


def load_examples(source: str, cfg: DataConfig, *, normalize: bool = False) -> list[Example]:
    """Read ``source`` (streamed) and return its unique prompts as Examples."""
    return rows_to_examples(iter_rows(source, hub_split=cfg.hub_split), cfg, source, normalize=normalize)


def rows_to_examples(rows: Iterable[tuple[int, dict]], cfg: DataConfig, source: str, *,
                     normalize: bool = False) -> list[Example]:
    """Validate raw rows and merge rows with the same prompt into one Example.

    Every row needs a prompt and a reference; a row without a count counts 1. The merge is
    ``PromptCounter``'s: counts add up, references are unioned in first-seen order, the first
    row's prompt text, id (``{file name}:{line}`` without one) and extra columns are kept, and
    prompts come out in order of first appearance. Prompts match exactly, or after
    ``normalize_prompt`` (whitespace, case, digits) with ``normalize``. Memory grows with unique
    prompts only, so a traffic log larger than memory streams through.
    """
    counter = PromptCounter(normalize=normalize, source=source, id_field=cfg.id_field)
    known = {cfg.prompt_field, cfg.reference_field, cfg.references_field, cfg.id_field, cfg.count_field, WEIGHT_FIELD}
    for line, row in rows:
        prompt = _prompt(row, cfg, source, line)
        references = _references(row, cfg, source, line)
        count = _count(row, cfg, source, line)
        counter.add(line, prompt, references, count, id=row.get(cfg.id_field),
                    meta={k: v for k, v in row.items() if k not in known})
    if not len(counter):
        raise RlftError(f"{source}: no examples")
    return counter.examples()


def _present(row: dict, name: str) -> bool:
    # Parquet/`datasets` rows carry every column; a null cell means the field is absent.
    return row.get(name) is not None


def _prompt(row: dict, cfg: DataConfig, source: str, line: int) -> str:
    name = cfg.prompt_field
    if not _present(row, name):
        raise RlftError(f"{where(source, line, name)}: missing (columns: {', '.join(map(str, row)) or 'none'})")
    value = row[name]
    if not isinstance(value, str):
        raise RlftError(f"{where(source, line, name)}: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RlftError(f"{where(source, line, name)}: empty prompt")
    return value


def _references(row: dict, cfg: DataConfig, source: str, line: int) -> list[str]:
    if _present(row, cfg.reference_field):
        name, value = cfg.reference_field, row[cfg.reference_field]
        values = [value] if isinstance(value, str) else value
    elif _present(row, cfg.references_field):
        name, value = cfg.references_field, row[cfg.references_field]
        values = value
        if isinstance(value, str):
            # CSV cannot hold a list; accept a JSON array in the cell.
            try:
                values = json.loads(value) if value.lstrip().startswith("[") else value
            except json.JSONDecodeError:
                raise RlftError(f"{where(source, line, name)}: malformed JSON list of references") from None
    else:
        raise RlftError(f"{where(source, line)}: no reference; expected field '{cfg.reference_field}' "
                        f"(a string or list of strings) or '{cfg.references_field}' (a list of strings)")
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise RlftError(f"{where(source, line, name)}: must be a string or a list of strings")
    if not values:
        raise RlftError(f"{where(source, line, name)}: no references (empty list)")
    if any(not v.strip() for v in values):
        raise RlftError(f"{where(source, line, name)}: empty reference")
    return list(values)


def _count(row: dict, cfg: DataConfig, source: str, line: int) -> float:
    if _present(row, cfg.count_field) and row[cfg.count_field] != "":
        name, integer = cfg.count_field, True
    elif _present(row, WEIGHT_FIELD) and row[WEIGHT_FIELD] != "":
        name, integer = WEIGHT_FIELD, False
    else:
        return 1
    value = row[name]
    kind = "a positive integer" if integer else "a positive number"
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:  # CSV cells are text
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0 or (integer and not number.is_integer()):
        raise RlftError(f"{where(source, line, name)}: must be {kind}, got {value!r}")
    # Integer counts stay exact ints while summing a long log.
    return int(number) if integer else number
