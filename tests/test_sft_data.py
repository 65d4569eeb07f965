"""SFT data: messages JSONL (errors name file and line), the built-in conversation set (deterministic,
disjoint splits, graders), packing (best fit, exact resume), and the masked loss (no NaN; the SFT
gradient is pretraining's with the mask as per-token weights, float64)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigpt.model import GPT, GPTConfig
from minigpt.posttrain import grade
from minigpt.posttrain.builtin_chats import builtin_conversations, compare_reply, count_reply, model_facts
from minigpt.posttrain.conversations import ConversationError, read_jsonl, write_jsonl
from minigpt.posttrain.packing import PackedLoader, best_fit_decreasing, tokenize
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import add_chat_tokens

CFG = GPTConfig(block_size=64, vocab_size=300, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def sets():
    return builtin_conversations(model_facts(CFG), seed=3, n_compare=200, n_arithmetic=200, n_words=100)


@pytest.fixture(scope="module")
def tok(sets):
    t = Tokenizer.train([m["content"] for e in sets[0] for m in e["messages"]], 600)
    add_chat_tokens(t)
    return t


# --------------------------------------------------------------------------------------------------
# files

def test_jsonl_round_trip_and_bad_lines_are_counted(tmp_path, sets):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, sets[1][:5])
    with open(path, "a") as f:
        f.write("not json\n\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "no reply"}]}) + "\n")
        f.write(json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
        f.write(json.dumps([1, 2]) + "\n")
    f2 = tmp_path / "d.jsonl"
    f2.write_bytes(b"\xff\xfe\n" + json.dumps(sets[1][5]).encode() + b"\n")
    said = []
    got, skipped = read_jsonl([path, f2], log=said.append)
    assert got == sets[1][:6] and skipped == 5
    assert said[0].startswith(f"skipped {path}:6: ") and "Expecting value" in said[0]
    assert f"{path}:8: no assistant message" in said[1]
    assert f"{path}:9: message 0: role must be one of" in said[2]
    assert f"{path}:10: expected a JSON object" in said[3]
    assert f"{f2}:1: not UTF-8" in said[4]
    with pytest.raises(ConversationError, match=f"{path}:6: "):
        read_jsonl(path, strict=True)
    with pytest.raises(ConversationError, match="no such conversation file"):
        read_jsonl(tmp_path / "missing.jsonl")
    empty = tmp_path / "e.jsonl"
    empty.write_text("{}\n")
    with pytest.raises(ConversationError, match=r"no usable conversation \(1 bad lines skipped\)"):
        read_jsonl(empty, log=said.append)


# --------------------------------------------------------------------------------------------------
# the built-in set

def test_builtin_set_is_deterministic_with_disjoint_splits(sets):
    train, test = sets
    again = builtin_conversations(model_facts(CFG), seed=3, n_compare=200, n_arithmetic=200, n_words=100)
    assert (train, test) == again
    other = builtin_conversations(model_facts(CFG), seed=4, n_compare=200, n_arithmetic=200, n_words=100)
    assert other[1] != test
    tasks = {e["task"] for e in test}
    assert tasks == {"identity", "docs", "count", "spell", "compare", "arithmetic", "smalltalk"}
    asked = lambda s: {e["messages"][-2]["content"] for e in s if e["task"] != "smalltalk"}
    assert not asked(train) & asked(test)
    # what is asked about is disjoint too: no test word, number pair or function is taught
    words = lambda s: {e["answer"] for e in s if e["task"] == "spell"}
    assert not words(train) & words(test)
    assert any("9.11 or 9.9" in e["messages"][0]["content"] for e in test)


def test_identity_answers_come_from_the_config(sets):
    facts = model_facts(CFG)
    replies = [e for e in sets[0] + sets[1] if e["task"] == "identity"]
    params = [e for e in replies if e["answer"] == f"{facts['params']:,}"]
    assert params and all(f"{facts['params']:,}" in e["messages"][-1]["content"] for e in params)
    assert any(e["answer"] == "64 tokens" for e in replies)
    assert len({e["messages"][0]["content"] for e in replies}) > 200  # many phrasings


@pytest.mark.parametrize("word, letter, n", [("strawberry", "r", 3), ("banana", "a", 3), ("sky", "z", 0)])
def test_count_working_ends_in_the_count(word, letter, n):
    reply, answer = count_reply(word, letter)
    assert answer == str(n) and grade.grade_answer("count", reply, answer) == 1.0
    assert "".join(c for c in reply.splitlines()[0] if c.isalpha()) == word


@settings(max_examples=100)
@given(st.decimals(0, 100, places=3, allow_nan=False), st.decimals(0, 100, places=2, allow_nan=False),
       st.booleans())
def test_compare_working_is_right(a, b, bigger):
    a, b = format(a.normalize(), "f"), format(b.normalize(), "f")
    if float(a) == float(b):
        return
    reply, pick = compare_reply(a, b, bigger)
    want = max(a, b, key=float) if bigger else min(a, b, key=float)
    assert pick == want and grade.final_answer(reply) == want


def test_graders():
    assert grade.grade_answer("arithmetic", "3 + 4 = 7\n#### 7", "7") == 1.0
    assert grade.grade_answer("arithmetic", "#### 7\nno, wait\n#### 8", "7") == 0.0   # the last one counts
    assert grade.grade_answer("arithmetic", "#### 1,200", "1200") == 1.0
    assert grade.grade_answer("compare", "#### 9.90", "9.9") == 1.0
    assert grade.grade_answer("arithmetic", "the answer is 7", "7") == 0.0           # no #### line
    assert grade.grade_answer("spell", "#### S-K-Y.", "s-k-y") == 1.0
    assert grade.grade_answer("identity", "I have 1,234 parameters.", "1,234") == 1.0
    assert grade.grade_answer("identity", "I have 1,235 parameters.", "1,234") == 0.0
    with pytest.raises(ValueError, match="no grader for task 'smalltalk'"):
        grade.grade_answer("smalltalk", "hi", "")


def test_make_grader_grades_by_prompt(sets):
    test = [e for e in sets[1] if e["task"] in grade.GRADERS]
    g = grade.make_grader(test)
    for e in test[:50]:
        prompt, reply = grade.split_example(e)
        assert g(prompt, reply) == 1.0
        assert g(prompt, "no idea") == 0.0
    with pytest.raises(ValueError):
        g("an unknown prompt", "x")


# --------------------------------------------------------------------------------------------------
# packing

@settings(max_examples=60)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=80), st.integers(40, 70))
def test_best_fit_decreasing_packs_every_item_once_within_capacity(lengths, cap):
    rows = best_fit_decreasing(lengths, cap)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= cap for r in rows)
    # no two rows could be merged: best fit leaves at most one row at most half full
    assert sum(sum(lengths[i] for i in r) <= cap // 2 for r in rows) <= 1


def test_packed_batches_hold_the_conversations_and_their_masks(tok, sets):
    ex = tokenize(tok, sets[1][:40])
    loader = PackedLoader(ex, B=3, T=63, seed=None)
    seen = []
    for _ in range(loader.num_windows() // 3):
        x, y, w = loader.next_batch()
        assert x.shape == y.shape == w.shape == (3, 63) and w.dtype == np.float32
        assert np.array_equal(y == -1, w == 0)
        seen.append((x, y))
    # the rows of one epoch hold every short conversation exactly once
    assert loader.too_long == sum(len(i) > 64 for i, _ in ex)
    kept = [i for i, _ in ex if len(i) <= 64]
    assert sum(len(i) for i in kept) == loader.lengths.sum()
    assert 0 < loader.efficiency <= 1


def test_resume_is_exact(tok, sets):
    ex = tokenize(tok, sets[0][:40])
    a = PackedLoader(ex, B=4, T=63, seed=7)
    for _ in range(9):  # into the second epoch
        a.next_batch()
    b = PackedLoader(ex, B=4, T=63, seed=7)
    b.load_state(json.loads(json.dumps(a.state())))
    for _ in range(12):
        for u, v in zip(a.next_batch(), b.next_batch()):
            assert np.array_equal(u, v)
    assert a.epoch >= 1


def test_too_long_conversations_are_dropped_or_truncated_and_counted(tok):
    long = {"messages": [{"role": "user", "content": "hi " * 80}, {"role": "assistant", "content": "ok"}]}
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    ex = tokenize(tok, [long, short])
    assert PackedLoader(ex, 1, 31).too_long == 1 and len(PackedLoader(ex, 1, 31).examples) == 1
    t = PackedLoader(ex, 1, 31, too_long="truncate")
    assert t.too_long == 1 and max(t.lengths) == 32
    with pytest.raises(ValueError, match="longer than T"):
        PackedLoader(ex[:1], 1, 31)


def test_builtin_set_packs_above_90_percent(tok, sets):
    loader = PackedLoader(tokenize(tok, sets[0]), B=8, T=255, seed=0)
    assert loader.efficiency >= 0.9


# --------------------------------------------------------------------------------------------------
# the masked loss

def test_a_batch_with_every_token_masked_has_loss_zero_not_nan():
    m = GPT(CFG, backend="numpy", seed=0)
    x = np.ones((2, 8), dtype=np.int64)
    loss = m.forward(x, np.full((2, 8), -1), weights=np.zeros((2, 8), np.float32))
    m.zero_grad()
    m.backward()
    assert loss == 0.0 and not np.isnan(m.grads_memory).any() and not m.grads_memory.any()


def test_sft_gradient_is_pretraining_gradient_with_mask_weights(tok, sets):
    """float64: the SFT batch's gradient equals (a) the pretraining loss's gradient with the mask as
    per-token weights, normalised by the marked tokens, and (b) central finite differences."""
    cfg = GPTConfig(block_size=32, vocab_size=tok.n_vocab, n_layer=1, n_head=2, n_embd=8)
    m = GPT(cfg, backend="numpy", seed=1, dtype=np.float64)
    loader = PackedLoader(tokenize(tok, sets[1][:6]), B=2, T=31, seed=None, too_long="truncate")
    x, y, w = loader.next_batch()
    assert 0 < w.sum() < w.size
    m.forward(x, y, weights=w)
    m.zero_grad(); m.backward()
    g_sft = m.grads_memory.copy()
    loader.reset()
    rows = np.stack([loader.next_row()[0] for _ in range(2)])  # (B, T+1) the same two rows
    assert np.array_equal(rows[:, :-1], x)
    full = rows[:, 1:]                                          # every next token, as pretraining sees it
    m.forward(x, full, weights=w.astype(np.float64) * (w.size / float(w.sum())))
    m.zero_grad(); m.backward()
    assert np.allclose(m.grads_memory, g_sft, rtol=1e-10, atol=1e-14)
    # finite differences of the SFT loss on a few parameters of every tensor
    rng = np.random.default_rng(0)
    p = m.params_memory
    for i in rng.choice(p.size, 40, replace=False):
        old = p[i]
        p[i] = old + 1e-6; up = m.forward(x, y, weights=w)
        p[i] = old - 1e-6; down = m.forward(x, y, weights=w)
        p[i] = old
        assert abs((up - down) / 2e-6 - g_sft[i]) <= 1e-6 + 1e-5 * abs(g_sft[i])
