"""Preference files in TRL's formats, and the simulated labeller that stands in for people."""
import json

import numpy as np
import pytest

from minigpt.posttrain.preferences import Pair, gold_agreement, gold_score, label, read_preferences, write_preferences

USER = [{"role": "user", "content": "What does the textwrap module do?"}]


def test_every_trl_form_reads_as_a_pair(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [
        {"prompt": USER, "chosen": [{"role": "assistant", "content": "good"}],
         "rejected": [{"role": "assistant", "content": "bad"}]},
        {"chosen": USER + [{"role": "assistant", "content": "good"}],
         "rejected": USER + [{"role": "assistant", "content": "bad"}]},            # implicit prompt
        {"prompt": "What does the textwrap module do?", "chosen": "good", "rejected": "bad"},  # plain text
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    pairs, skipped = read_preferences(path)
    assert skipped == 0 and len(pairs) == 3
    assert all(p == Pair(USER, "good", "bad") for p in pairs)
    write_preferences(tmp_path / "out.jsonl", pairs)
    assert read_preferences(tmp_path / "out.jsonl")[0] == pairs


@pytest.mark.parametrize("line, message", [
    ("{not json", "Expecting property name"),
    (json.dumps({"chosen": "x"}), "expected an object with chosen and rejected"),
    (json.dumps({"chosen": USER + [{"role": "assistant", "content": "a"}],
                 "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}),
     "differ only in their last"),
    (json.dumps({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "a", "rejected": "b"}), "role must be one of"),
    (json.dumps({"prompt": USER, "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}), "must be the assistant"),
])
def test_bad_lines_name_file_and_line_or_are_counted(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + line + "\n")
    pairs, skipped = read_preferences(path)
    assert len(pairs) == 1 and skipped == 1
    with pytest.raises(ValueError, match=f"bad.jsonl:2: .*{message}"):
        read_preferences(path, strict=True)
    path.write_bytes(b"\xff\xfe\n")
    assert read_preferences(path) == ([], 1)                      # not UTF-8: counted, not raised


def test_gold_prefers_polite_on_topic_brief_replies():
    q = "What does the textwrap module do?"
    polite = "Happy to help: the textwrap module wraps and fills paragraphs of text."
    rude = "It wraps text."
    off_topic = "Thanks for asking! I like turtles."
    babble = "thank you thank you thank you textwrap textwrap textwrap module module module"
    long = polite + " " + " ".join(f"word{i}" for i in range(60))
    assert gold_score(q, polite) > max(gold_score(q, r) for r in (rude, off_topic, babble, long))


def test_labeller_is_noisy_but_agrees_with_gold_mostly():
    rng = np.random.default_rng(0)
    q = "What does the textwrap module do?"
    good, bad = "Sure, textwrap wraps text.", "textwrap wraps text."  # gold 2 vs 1: p = sigmoid(2) = 0.88
    picks = [label(q, good, bad, rng) for _ in range(400)]
    share = sum(c == good for c, _ in picks) / len(picks)
    assert 0.8 < share < 1.0
    pairs = [Pair([{"role": "user", "content": q}], c, r) for c, r in picks]
    assert gold_agreement(pairs) == pytest.approx(share)
