"""High-frequency fine-tuning: counting, weights, sampling, buckets, scores and the tail guard."""

import math
import time
from collections import Counter

import pytest
import torch

from rlft.data.frequency import (
    PromptCounter,
    PromptSampler,
    TailGuard,
    apply_tail_boost,
    assign_buckets,
    count_prompts,
    inclusion_probs,
    loss_weights,
    normalize_prompt,
    stratified_scores,
    traffic_weights,
)
from rlft.errors import RlftError


def assert_close(actual, expected, atol=1e-9, rtol=0.0):
    # torch.testing.assert_close costs seconds of lazy imports on its first call.
    actual, expected = actual.double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual, expected)


def rows(*records):
    """A log as ``iter_rows`` yields it: 1-based line numbers and raw dicts."""
    return list(enumerate(records, start=1))


def r(prompt, reference="ref", **extra):
    return {"prompt": prompt, "reference": reference, **extra}


# ---------------------------------------------------------------------------- counting


def test_exact_counts_ordered_by_count_then_first_appearance():
    log = rows(r("c"), r("a"), r("b"), r("a"), r("b"), r("d"), r("c"), r("e", count=2))
    examples = count_prompts(log)
    assert [(e.prompt, e.count) for e in examples] == [("c", 2), ("a", 2), ("b", 2), ("e", 2), ("d", 1)]
    assert [e.id for e in examples] == ["p1", "p2", "p3", "p4", "p5"]


def test_count_column_and_weights_and_csv_text():
    log = rows(r("a", count=3), r("b", count="5"), r("a", count=2.0), r("c", weight=0.5), r("c", count=""),
               r("d", count=None, weight="1.5"))
    counts = {e.prompt: e.count for e in count_prompts(log)}
    assert counts == {"a": 5.0, "b": 5.0, "c": 1.5, "d": 1.5}


def test_first_row_id_and_extra_fields_are_kept():
    log = rows(r("a", id=17, lang="en"), r("a", id=18, lang="de"), r("b"))
    a, b = count_prompts(log)
    assert (a.id, a.meta) == ("17", {"lang": "en"})
    assert b.id == "p2"


def test_duplicate_id_for_different_prompts_is_an_error():
    with pytest.raises(RlftError, match=r"^log:3: field 'id': id 'x' also names a different prompt \(line 1\)"):
        count_prompts(rows(r("a", id="x"), r("a", id="x"), r("b", id="x")))


def test_unicode_prompts_and_nfkc_digits():
    assert normalize_prompt("错误 ４０４ 在第 １２ 行") == "错误 0 在第 0 行"
    assert normalize_prompt("  Error\t404\n at  LINE 12 ") == "error 0 at line 0"
    assert normalize_prompt("ＡＢＣ\u3000x") == "abc x"  # fullwidth letters, ideographic space
    log = rows(r("翻译：你好"), r("翻译：你好"), r("翻译：再见"), r("第１２行"), r("第3行"))
    plain = count_prompts(log)
    assert [(e.prompt, e.count) for e in plain] == [("翻译：你好", 2), ("翻译：再见", 1), ("第１２行", 1), ("第3行", 1)]
    merged = count_prompts(log, normalize=True)
    assert [(e.prompt, e.count) for e in merged] == [("翻译：你好", 2), ("第１２行", 2), ("翻译：再见", 1)]


def test_normalization_merges_only_when_on():
    log = rows(r("Error 404  at line 12"), r("error 500 at LINE 7"), r(" ERROR 1 at line 2\n"), r("other"))
    off = count_prompts(log)
    assert len(off) == 4 and all(e.count == 1 for e in off)
    on = count_prompts(log, normalize=True)
    assert [(e.prompt, e.count) for e in on] == [("Error 404  at line 12", 3), ("other", 1)]


def test_references_are_unioned_across_repeats_in_first_seen_order():
    log = rows(r("q", "x"), {"prompt": "q", "references": ["y", "x"]}, r("q", ["z", "y"]),
               {"prompt": "q", "references": '["w"]'}, {"prompt": "q"}, r("other", "o"))
    q, other = count_prompts(log)
    assert q.references == ("x", "y", "z", "w")
    assert q.count == 5 and other.references == ("o",)


def test_prompt_without_any_reference_names_its_first_line():
    log = rows(r("a"), {"prompt": "b"}, {"prompt": "b"})
    with pytest.raises(RlftError, match=r"^log:2: no reference for this prompt"):
        count_prompts(log)
    assert {e.prompt: e.references for e in count_prompts(log, require_reference=False)}["b"] == ()


@pytest.mark.parametrize("row, message", [
    ({"reference": "r"}, "field 'prompt': missing"),
    ({"prompt": 3, "reference": "r"}, "field 'prompt': must be a string"),
    ({"prompt": "  ", "reference": "r"}, "field 'prompt': empty prompt"),
    ({"prompt": "p", "reference": " "}, "field 'reference': empty reference"),
    ({"prompt": "p", "references": []}, "field 'references': no references"),
    ({"prompt": "p", "reference": ["a", 1]}, "field 'reference': must be a string or a list of strings"),
])
def test_row_errors_name_line_and_field(row, message):
    with pytest.raises(RlftError, match=f"^traffic.jsonl:2: {message}"):
        count_prompts(rows(r("ok"), row), source="traffic.jsonl")


@pytest.mark.parametrize("field, value", [
    ("count", -3), ("count", 0), ("count", 2.5), ("count", "2.5"), ("count", "abc"), ("count", True),
    ("count", float("nan")), ("weight", 0), ("weight", "abc"), ("weight", False), ("weight", float("inf")),
])
def test_invalid_counts_name_line_and_field(field, value):
    kind = "integer" if field == "count" else "number"
    with pytest.raises(RlftError, match=rf"^log.jsonl:3: field '{field}': must be a positive {kind}, got "):
        count_prompts(rows(r("a"), r("b", count=4), r("c", **{field: value})), source="log.jsonl")


def test_chunked_counter_equals_one_pass():
    prompts = ["a", "B", "b", "c  d", "e 1", "E 2", "a"]
    log = rows(*(r(prompts[i % 7], f"ref{i % 3}", count=1 + i % 4) for i in range(40)))
    for normalize in (False, True):
        counter = PromptCounter(normalize=normalize)
        for start in (0, 7, 19, 33):  # uneven chunks, as a log split across files or batches
            for line, row in log[start:start + {0: 7, 7: 12, 19: 14, 33: 7}[start]]:
                counter.add(line, row)
        whole = count_prompts(log, normalize=normalize)
        assert counter.examples() == whole
        assert sum(e.count for e in whole) == sum(1 + i % 4 for i in range(40))


def test_streaming_log_keeps_one_entry_per_unique_prompt():
    consumed = 0

    def log():  # a generator: the log is never materialized
        nonlocal consumed
        for i in range(200_000):
            consumed += 1
            yield i + 1, {"prompt": f"question {i % 50}", "reference": f"answer {i % 50}"}

    counter = PromptCounter()
    start = time.perf_counter()
    for line, row in log():
        counter.add(line, row)
    assert len(counter) == 50 and consumed == 200_000
    examples = counter.examples()
    assert time.perf_counter() - start < 30  # about 1-2 s; a per-row scan of the entries would be far slower
    assert [e.count for e in examples] == [4000.0] * 50
    assert examples[0].references == ("answer 0",)


# ---------------------------------------------------------------------------- weights and sampling


def test_traffic_weights_by_hand():
    counts = torch.tensor([1.0, 4.0, 16.0])
    assert_close(traffic_weights(counts, 0.0, 0.0), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert_close(traffic_weights(counts, 1.0, 0.0), torch.tensor([1, 4, 16], dtype=torch.float64) / 21)
    assert_close(traffic_weights(counts, 0.5, 0.0), torch.tensor([1, 2, 4], dtype=torch.float64) / 7)
    # floor 0.3: p = 0.3/3 + 0.7 * q
    assert_close(traffic_weights(counts, 1.0, 0.3),
                               0.1 + 0.7 * torch.tensor([1, 4, 16], dtype=torch.float64) / 21)
    assert_close(traffic_weights(counts, 1.0, 1.0), torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("floor", [0.0, 0.05, 0.5, 1.0])
def test_floor_guarantees_a_minimum_share(floor):
    counts = torch.tensor([1e9, 1e6, 30.0, 1.0, 1.0, 2.0, 1.0])
    p = traffic_weights(counts, 1.0, floor)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(p.min()) >= floor / 7 - 1e-15
    assert bool((p[:-1] >= p[-1]).all())  # the order of the counts survives the floor
    assert torch.isfinite(traffic_weights(counts, 40.0, floor)).all()  # 1e9**40 overflows float64


@pytest.mark.parametrize("alpha, floor", [(-0.5, 0.0), (1.0, -0.1), (1.0, 1.5)])
def test_traffic_weights_reject_bad_settings(alpha, floor):
    with pytest.raises(RlftError, match="frequency.(alpha|floor)"):
        traffic_weights(torch.tensor([1.0, 2.0]), alpha, floor)


def test_sampler_is_reproducible_and_resumes():
    p = traffic_weights(torch.tensor([100.0, 50, 20, 10, 5, 1, 1, 1]), 1.0, 0.1)
    a, b, c = PromptSampler(p, 3, seed=7), PromptSampler(p, 3, seed=7), PromptSampler(p, 3, seed=8)
    draws_a = [a.sample() for _ in range(20)]
    assert all(torch.equal(x, b.sample()) for x in draws_a)
    assert not all(torch.equal(x, c.sample()) for x in draws_a)
    state = a.state_dict()
    expected = [a.sample() for _ in range(5)]
    resumed = PromptSampler(p, 3, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, resumed.sample()) for x in expected)
    with pytest.raises(RlftError, match="saved with 8 unique prompts"):
        PromptSampler(p[:4], 3).load_state_dict(state)


def test_no_duplicates_within_a_step_even_with_a_dominant_head():
    p = traffic_weights(torch.tensor([1e6, 10, 5, 3, 1, 1]), 1.0, 0.0)  # the head has p ~ 1
    sampler = PromptSampler(p, 5, seed=0)
    for _ in range(300):
        idx = sampler.sample()
        assert idx.shape == (5,) and len(set(idx.tolist())) == 5


def test_more_slots_than_prompts_repeat_in_proportion():
    sampler = PromptSampler(torch.tensor([0.5, 0.25, 0.25]), 8, seed=0)
    idx = sampler.sample()
    assert idx.shape == (8,) and sorted(Counter(idx.tolist()).values()) == [2, 2, 4]


def test_sampling_frequency_matches_p():
    p = torch.tensor([0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05], dtype=torch.float64)  # B * p <= 1 for B = 3
    sampler = PromptSampler(p, 3, seed=1)
    steps = 2500
    hits = torch.zeros(7, dtype=torch.float64)
    for _ in range(steps):
        hits += torch.bincount(sampler.sample(), minlength=7)
    assert_close(hits / (3 * steps), p, atol=0.01, rtol=0)
    assert bool((sampler.loss_weights(sampler.sample()) == 1).all())  # nothing capped: plain batch mean


def test_capped_head_is_corrected_by_loss_weights():
    """With B * p_i > 1 the head can be drawn once per step; the weights restore sum_i p_i L_i."""
    p = torch.tensor([0.6, 0.2, 0.1, 0.05, 0.05], dtype=torch.float64)
    sampler = PromptSampler(p, 3, seed=2)
    pi = sampler.inclusion
    assert float(pi[0]) == 1.0 and float(pi.sum()) == pytest.approx(3.0)
    assert_close(pi[1:], 2 * p[1:] / p[1:].sum())  # the excess spread proportionally
    steps = 2500
    weighted = torch.zeros(5, dtype=torch.float64)
    for _ in range(steps):
        idx = sampler.sample()
        weighted.index_add_(0, idx, sampler.loss_weights(idx) / 3)
    assert_close(weighted / steps, p, atol=0.01, rtol=0)


def test_inclusion_probs_sum_to_batch_and_stay_in_unit_interval():
    p = traffic_weights(torch.tensor([1e5, 1e4, 1e3, 100, 10, 1, 1, 1, 1, 1]), 1.0, 0.0)
    pi = inclusion_probs(p, 4)
    assert float(pi.sum()) == pytest.approx(4.0) and float(pi.max()) <= 1.0
    assert bool((pi[:-1] >= pi[1:] - 1e-12).all())


def test_loss_mode_weights_uniform_draws_by_traffic():
    p = traffic_weights(torch.tensor([6.0, 3.0, 1.0]), 1.0, 0.0)
    idx = torch.tensor([2, 0])
    assert_close(loss_weights(p, idx), torch.tensor([0.3, 1.8], dtype=torch.float64))
    sampler = PromptSampler(torch.full((3,), 1 / 3), 2, seed=0, target=p)
    assert_close(sampler.loss_weights(idx), 3 * p[idx])
    assert float((loss_weights(p, torch.arange(3))).mean()) == pytest.approx(1.0)  # mean 1 over prompts
    with pytest.raises(RlftError, match="never sampled"):
        PromptSampler(torch.tensor([1.0, 0.0, 1.0]), 2, target=p)


def test_a_repeated_prompt_costs_one_rollout_per_draw():
    log = rows(*([r("hot")] * 10_000 + [r(f"rare {i}") for i in range(9)]))
    examples = count_prompts(log)
    assert len(examples) == 10 and examples[0].count == 10_000
    p = traffic_weights(torch.tensor([e.count for e in examples]), 1.0, 0.0)
    sampler = PromptSampler(p, 4, seed=0)
    for _ in range(100):
        idx = sampler.sample()
        assert len(set(idx.tolist())) == 4  # B distinct unique prompts, so B * G rollouts per step
        assert int((idx == 0).sum()) == 1  # p ~ 0.999: drawn every step, but once


# ---------------------------------------------------------------------------- buckets and scores


def test_buckets_by_hand_with_a_tie_crossing_the_head_boundary():
    counts = [5, 20, 40, 3, 20, 8, 3, 1]  # total 100; sorted 40, 20, 20, 8, 5, 3, 3, 1
    # 40 and the first 20 reach 60 >= 50; the second 20 (a tie, later in input order) starts the torso.
    assert assign_buckets(counts, 0.5, 0.35) == ["tail", "head", "head", "tail", "torso", "torso", "tail", "tail"]
    # Without the tie, the same prefix rule: 40 + 19 reach the head, 18 falls in the torso.
    assert assign_buckets([5, 19, 40, 3, 18, 8, 3, 4], 0.5, 0.35)[4] == "torso"


def test_tie_groups_are_cut_in_input_order():
    assert assign_buckets([50, 10, 10, 10, 10, 10]) == ["head"] + ["torso"] * 3 + ["tail"] * 2
    assert assign_buckets([1, 1, 1, 1]) == ["head", "head", "torso", "torso"]
    assert assign_buckets([0.1, 0.2, 0.7], 0.7, 0.2) == ["tail", "torso", "head"]  # 0.7 of 1.0 is reached
    assert assign_buckets([]) == []
    with pytest.raises(RlftError, match="head_share"):
        assign_buckets([1, 2], 0.8, 0.3)


def test_stratified_scores_by_hand():
    scores, counts = [0.9, 0.5, 0.4, 0.1], [10, 5, 4, 1]
    out = stratified_scores(scores, counts, ["head", "torso", "torso", "tail"])
    assert out["traffic_weighted"] == pytest.approx((9 + 2.5 + 1.6 + 0.1) / 20)
    assert out["unweighted"] == pytest.approx(0.475)
    assert (out["head"], out["torso"], out["tail"]) == (pytest.approx(0.9), pytest.approx(0.45), pytest.approx(0.1))
    assert (out["n_head"], out["n_torso"], out["n_tail"]) == (1, 2, 1)
    empty = stratified_scores([0.5, 0.7], [3, 1], ["head", "head"])
    assert empty["torso"] is None and empty["tail"] is None and empty["n_tail"] == 0
    with pytest.raises(RlftError, match="unknown buckets"):
        stratified_scores([1.0], [1], ["middle"])


# ---------------------------------------------------------------------------- tail guard


def test_tail_guard_triggers_holds_and_releases():
    guard = TailGuard(1.0, 2.0, metric="rouge_l")
    assert guard.update(43.0).message is None  # the start
    quiet = guard.update(42.1)  # within delta
    assert (quiet.active, quiet.multiplier, quiet.message) == (False, 1.0, None)
    hit = guard.update(41.2)
    assert (hit.active, hit.multiplier) == (True, 2.0)
    assert hit.message == "tail guard: tail rouge_l 41.2 < start 43.0 - 1.0; tail weight x2"
    assert guard.update(None).active  # an empty tail carries no news
    assert guard.update(41.9).active
    released = guard.update(42.0)
    assert (released.active, released.multiplier) == (False, 1.0) and "released" in released.message
    assert guard.update(42.5).message is None


def test_tail_guard_resumes_and_can_be_disabled():
    guard = TailGuard(0.5, 3.0)
    guard.update(10.0)
    guard.update(9.0)
    fresh = TailGuard(0.5, 3.0)
    fresh.load_state_dict(guard.state_dict())
    assert fresh.update(9.4).multiplier == 3.0 and fresh.start == 10.0
    off = TailGuard(-1.0, 2.0)
    assert all(off.update(m).multiplier == 1.0 for m in (50.0, 10.0, 0.0))
    with pytest.raises(RlftError, match="tail_guard_boost"):
        TailGuard(1.0, 0.5)


def test_apply_tail_boost_renormalizes():
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    boosted = apply_tail_boost(p, torch.tensor([False, True, True]), 2.0)
    assert_close(boosted, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert_close(apply_tail_boost(p, torch.tensor([False, True, True]), 1.0), p)
    assert math.isclose(float(apply_tail_boost(p, torch.tensor([True, False, False]), 3.0)[0]), 0.75)
