"""Training data that uses the tools, and the probe that turns what a model does not know into
refusals: deterministic, train/test disjoint, tool outputs true, refusals recognised."""
import importlib
import json

import numpy as np
import pytest
from chatmodel import make_chat_model

from minigpt.cli import main

from minigpt.inference.calculator import calculate
from minigpt.inference.search import SearchIndex
from minigpt.posttrain.grade import grade_final
from minigpt.posttrain.probe import is_refusal, made_up_questions, new_examples, probe_set
from minigpt.posttrain.tool_chats import fact_documents, tool_conversations, towns
from minigpt.posttrain.tool_eval import own_text, score
from minigpt.tokenizer.chat import check_messages


@pytest.fixture(scope="module")
def sets():
    index = SearchIndex.build(fact_documents(60, seed=1))
    return tool_conversations(seed=1, n_mult=150, n_multistep=150, n_towns=60, index=index)


def question(e):
    return e["messages"][0]["content"]


def test_same_questions_with_and_without_tools(sets):
    for split in (0, 1):
        w, o = sets["with"][split], sets["without"][split]
        assert [(question(a), a["answer"], a["task"]) for a in w] == [(question(b), b["answer"], b["task"]) for b in o]
        assert not any("tool_calls" in m for e in o for m in e["messages"])
        assert all(any("tool_calls" in m for m in e["messages"]) for e in w)


def test_train_and_test_are_disjoint_and_deterministic(sets):
    train, test = sets["with"]
    assert {question(e) for e in train}.isdisjoint(question(e) for e in test)
    town = lambda e: e["messages"][1]["tool_calls"][0]["function"]["arguments"].split()[0]  # noqa: E731
    facts = lambda es: {town(e) for e in es if e["task"] == "facts"}  # noqa: E731
    assert facts(train).isdisjoint(facts(test)) and facts(test)
    assert {e["task"] for e in test} == {"mult", "multistep", "facts"}
    again = tool_conversations(seed=1, n_mult=150, n_multistep=150, n_towns=60,
                               index=SearchIndex.build(fact_documents(60, seed=1)))
    assert json.dumps(again["with"]) == json.dumps(sets["with"])


def test_tool_outputs_are_true_and_the_answer_follows(sets):
    for e in sets["with"][0] + sets["with"][1]:
        check_messages(e["messages"])
        calls = [(m["tool_calls"][0]["function"], out["content"])
                 for m, out in zip(e["messages"], e["messages"][1:]) if "tool_calls" in m]
        for fn, output in calls:
            if fn["name"] == "calculator":
                assert output == calculate(fn["arguments"])
            else:
                assert e["answer"] in output  # the passage found holds the answer
        assert grade_final(e["messages"][-1]["content"], e["answer"]) == 1.0
    multi = [e for e in sets["with"][0] if e["task"] == "multistep"]
    # the second call reads the first call's output
    assert all(e["messages"][2]["content"] in e["messages"][3]["tool_calls"][0]["function"]["arguments"] for e in multi)
    big = [e for e in sets["without"][0] if e["task"] == "mult"]
    assert all(len(e["answer"]) >= 4 for e in big)


def test_made_up_things_do_not_exist():
    real = {t["name"] for t in towns(60)}
    made = made_up_questions(60, n=40)
    ghosts = [k[len("ghost:"):] for k, q in made if k.startswith("ghost:") and k[len("ghost:"):] in q]
    assert len(made) == 40 and len(ghosts) == 20 and real.isdisjoint(ghosts)
    for k, _ in made:
        if k.startswith("fn:"):
            mod, name = k[3:].rsplit(".", 1)
            assert not hasattr(importlib.import_module(mod), name), k


def test_refusals_and_new_examples():
    assert is_refusal("I don't know that.") and is_refusal("Sorry, I do not know.")
    assert not is_refusal("#### 1796") and not is_refusal("I know: 1796")
    answerable, made_up = probe_set(60, n_made_up=20)
    assert {m["split"] for m in made_up} == {"train", "test"}
    records = [{**answerable[0], "kind": "answerable", "verdict": "known"},
               {**answerable[1], "kind": "answerable", "verdict": "unknown"}]
    records += [{**m, "kind": "made_up", "verdict": "hallucinated"} for m in made_up]
    out = new_examples(records)
    assert out[0]["messages"][-1]["content"] == f"#### {answerable[0]['answer']}"
    assert is_refusal(out[1]["messages"][-1]["content"])
    assert len(out) == 2 + sum(m["split"] == "train" for m in made_up)  # held-out made-up questions stay out
    assert all(is_refusal(e["messages"][-1]["content"]) for e in out[2:])
    assert np.all([e["task"] == "refusal" for e in out[1:]])


def test_probe_command_writes_what_it_found(tmp_path, capsys):
    ckpt, tok_path = make_chat_model(str(tmp_path), never_stop=False)
    out = tmp_path / "probe"
    assert main(["probe", ckpt, "--tokenizer", tok_path, "--out", str(out), "--towns", "12", "--made-up", "6",
                 "--samples", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["probe"]
    records = [json.loads(line) for line in open(out / "probe.jsonl")]
    assert len(records) == summary["answerable"] + summary["made_up"] and all(len(r["samples"]) == 2 for r in records)
    # a random model knows nothing and never refuses: every question becomes a refusal to learn
    assert summary["known"] == 0 and summary["hallucinated"] == 6
    examples = [json.loads(line) for line in open(out / "refusals.jsonl")]
    made_up_train = sum(r["kind"] == "made_up" and r["split"] == "train" for r in records)
    assert len(examples) == summary["examples"] == 2 * (summary["answerable"] + made_up_train)
    assert all(is_refusal(e["messages"][-1]["content"]) for e in examples)
    assert main(["probe", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_tool_eval_scores_only_what_the_model_wrote(sets):
    test = sets["with"][1][:3]
    replies = [{"own": f"call\n#### {test[0]['answer']}", "calls": 1}, {"own": "#### 0", "calls": 2},
               {"text": f"<|output_start|>{test[2]['answer']}<|output_end|>", "own": "", "calls": 0}]
    s = score(test, replies)
    assert s["all"]["n"] == 3 and s["all"]["calls_per_reply"] == 1.0
    assert s["all"]["accuracy"] == pytest.approx(1 / 3 + (1 / 3 if test[1]["answer"] == "0" else 0))


def test_own_text_breaks_the_line_at_each_output():
    class Tok:
        def decode(self, ids):
            return "".join(map(str, ids))
    assert own_text(Tok(), [1, 2, 7, 8, 3], [False, False, True, True, False]) == "12\n3"
    assert own_text(Tok(), [7, 3], [True, False]) == "3"
