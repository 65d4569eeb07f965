"""`minigpt eval`: bits per byte from its definition, multiple-choice scoring against a direct
computation, llm.c's eval file, the chat variant, the built-in set, pass@k against enumeration,
generative evaluation, the command line."""
import itertools
import json
import math

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.inference import generate
from minigpt.model.backend import available
from minigpt.cli import main
from minigpt.eval import builtin, choice, generative, loss
from minigpt.fileio import make_header, write_shard
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import add_chat_tokens

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness. Ünïcödé costs more bytes than tokens.\n") * 3


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.train(TEXT * 4, vocab_size=300, pattern="gpt4")
    add_chat_tokens(t)
    return t


def make_model(tok, maxT=32, seed=0):
    cfg = GPTConfig(block_size=maxT, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, backend="numpy", seed=seed)
    model.params["wte"][:] *= 20  # peaked predictions: distinct losses per ending
    return model


def log_softmax_row(logits, V):
    z = np.asarray(logits[:V], dtype=np.float64)
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def direct_losses(model, ids):
    """-log p(ids[j+1] | ids[:j+1]) for every j: one unpadded row, log-softmax written out here."""
    model.forward(np.array([ids[:-1]]))
    logits = model.logits[0]
    return np.array([-log_softmax_row(logits[j], model.config.vocab_size)[ids[j + 1]] for j in range(len(ids) - 1)])


# --------------------------------------------------------------------------------------------------
# loss and bits per byte


def test_bpb_is_loss_times_tokens_over_bytes_over_ln2(tok):
    model = make_model(tok, maxT=16)  # the text is several windows long
    r = loss.text_bpb(model, tok, TEXT, batch_size=3)
    ids = tok.encode_ordinary(TEXT)
    n_bytes = len(TEXT.encode("utf-8"))
    assert r["tokens"] == len(ids) and r["bytes"] == n_bytes > len(TEXT)  # the umlauts are 2 bytes
    assert r["bpb"] == pytest.approx(r["loss"] * r["tokens"] / n_bytes / math.log(2), rel=1e-12)
    # the loss is each token's -log p given its window (stride block_size), computed directly
    full = [tok.eot] + ids
    want = np.concatenate([direct_losses(model, full[s:s + 17]) for s in range(0, len(full) - 1, 16)])
    assert r["loss"] == pytest.approx(want.mean(), rel=1e-5)


def test_shards_leave_special_tokens_out_of_bpb(tok, tmp_path):
    model = make_model(tok, maxT=128)
    ids = [tok.eot] + tok.encode_ordinary(TEXT[:80]) + [tok.eot] + tok.encode_ordinary(TEXT[80:150])
    write_shard(tmp_path / "val_000000.bin", np.array(ids))
    r = loss.shards_bpb(model, tok, str(tmp_path / "val_*.bin"))
    losses = direct_losses(model, ids)  # shorter than block_size: one window
    text = np.array(ids[1:]) != tok.eot
    assert r["tokens"] == len(ids) - 1 and r["loss"] == pytest.approx(losses.mean(), rel=1e-5)
    assert r["bytes"] == len(TEXT[:150].encode("utf-8"))
    assert r["bpb"] == pytest.approx(losses[text].sum() / r["bytes"] / math.log(2), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# multiple choice


EXAMPLES = [
    {"ctx": "It was the best of times, it was the", "endings": ["worst of times", "age of wisdom", "best", "xyz"], "label": 0},
    {"ctx": "it was the age of", "endings": ["foolishness.", "wisdom", "times"], "label": 1},
    {"context": "", "endings": ["It was", "Ünïcödé costs"], "label": 1},
]


def test_completion_scoring_matches_a_direct_computation(tok):
    model = make_model(tok)
    r = choice.score_completion(model, tok, EXAMPLES, batch_size=4)  # batches cut across examples
    right = right_norm = 0
    for ex, pred in zip(EXAMPLES, r["predictions"]):
        ctx = ex.get("ctx", ex.get("context"))
        ctx_ids = tok.encode_ordinary(ctx) if ctx else [tok.eot]
        sums, means = [], []
        for e in ex["endings"]:
            end = tok.encode_ordinary(" " + e if ctx else e)  # llm.c: a space before the ending
            l = direct_losses(model, ctx_ids + end)[len(ctx_ids) - 1:]
            assert len(l) == len(end)
            sums.append(l.sum())
            means.append(l.mean())
        np.testing.assert_allclose(pred["mean_losses"], means, rtol=1e-5)
        assert pred["pred"] == int(np.argmin(sums)) and pred["pred_norm"] == int(np.argmin(means))
        right += np.argmin(sums) == ex["label"]
        right_norm += np.argmin(means) == ex["label"]
    assert (r["acc"], r["acc_norm"], r["n"]) == (right / 3, right_norm / 3, 3)
    assert r["chance"] == pytest.approx((1 / 4 + 1 / 3 + 1 / 2) / 3)


@pytest.mark.skipif("c" not in available(), reason="the C backend is not built")
def test_c_backend_scores_as_numpy(tok, tmp_path):
    make_model(tok).save(tmp_path / "m.bin")
    a = choice.score_completion(GPT.load(str(tmp_path / "m.bin"), backend="numpy"), tok, EXAMPLES)
    b = choice.score_completion(GPT.load(str(tmp_path / "m.bin"), backend="c"), tok, EXAMPLES)
    for pa, pb in zip(a["predictions"], b["predictions"]):
        np.testing.assert_allclose(pa["mean_losses"], pb["mean_losses"], rtol=1e-4)


def test_long_context_is_cut_from_the_left(tok):
    model = make_model(tok, maxT=8)
    ex = {"ctx": TEXT[:200], "endings": ["worst of times", "wisdom"], "label": 0}
    r = choice.score_completion(model, tok, [ex])
    ctx = tok.encode_ordinary(ex["ctx"])
    for e, mean in zip(ex["endings"], r["predictions"][0]["mean_losses"]):
        end = tok.encode_ordinary(" " + e)
        row = (ctx + end)[-9:]  # maxT + 1 tokens: the ending whole, the context's last tokens
        assert mean == pytest.approx(direct_losses(model, row)[-len(end):].mean(), rel=1e-5)


def write_llmc_eval(path, tokenized):
    """llm.c's write_evalfile layout, written here from DESIGN.md's description."""
    stream = []
    for i, ex in enumerate(tokenized):
        body = [65535, 0, i, ex["label"], len(ex["ending_tokens"]), len(ex["ctx_tokens"])] + ex["ctx_tokens"]
        for end in ex["ending_tokens"]:
            body += [len(end)] + end
        body[1] = 2 * len(body)
        stream += body
    header = make_header(20240522, 1, len(tokenized), max(2 * len(s) for s in [stream]))
    with open(path, "wb") as f:
        f.write(header.tobytes() + np.array(stream, dtype="<u2").tobytes())


def test_llmc_eval_file_scores_like_jsonl(tok, tmp_path):
    model = make_model(tok)
    jsonl = tmp_path / "mc.jsonl"
    jsonl.write_text("".join(json.dumps(ex) + "\n" for ex in EXAMPLES[:2]))
    tokenized = [choice.tokenize(tok, choice.check_example(ex, "x")) for ex in EXAMPLES[:2]]
    write_llmc_eval(tmp_path / "mc.bin", tokenized)
    assert choice.read_examples(str(tmp_path / "mc.bin")) == tokenized
    a = choice.score_completion(model, tok, choice.read_examples(str(jsonl)))
    b = choice.score_completion(model, tok, choice.read_examples(str(tmp_path / "mc.bin")))
    assert a == b
    data = (tmp_path / "mc.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="example 1"):
        choice.read_examples(str(tmp_path / "cut.bin"))


def test_chat_variant_reads_the_answer_letters_logit(tok):
    model = make_model(tok, maxT=128)
    r = choice.score_chat(model, tok, [choice.check_example(ex, "x") for ex in EXAMPLES[:2]])
    for ex, pred in zip(EXAMPLES[:2], r["predictions"]):
        ids = choice.render_prompt(tok, [{"role": "user", "content": choice.chat_question(choice.check_example(ex, "x"))}])
        model.forward(np.array([ids]))
        letters = [tok.encode_ordinary(c)[0] for c in "ABCD"[:len(ex["endings"])]]
        z = model.logits[0, -1, letters]
        np.testing.assert_allclose(pred["letter_logits"], z, rtol=1e-4, atol=1e-4)
        assert pred["pred"] == int(np.argmax(z))
    plain = Tokenizer.train(TEXT, vocab_size=270)
    with pytest.raises(ValueError, match="chat tokens"):
        choice.score_chat(make_model(plain), plain, [choice.check_example(EXAMPLES[0], "x")])


@pytest.mark.parametrize("line, message", [
    ("{not json", "mc.jsonl:2: not JSON"),
    ('{"ctx": "a", "endings": ["b"], "label": 0}', "2 or more"),
    ('{"ctx": "a", "endings": ["b", "c"], "label": 2}', "'label' must be an index"),
    ('{"endings": ["b", "c"], "label": 0}', "'ctx' (or 'context')"),
])
def test_bad_jsonl_names_its_line(tmp_path, line, message):
    (tmp_path / "mc.jsonl").write_text(json.dumps(EXAMPLES[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError) as e:
        choice.read_examples(str(tmp_path / "mc.jsonl"))
    assert message in str(e.value)


def test_builtin_set_is_deterministic_and_well_formed():
    a, b = builtin.builtin_choices(n=20, seed=3), builtin.builtin_choices(n=20, seed=3)
    assert a == b and a != builtin.builtin_choices(n=20, seed=4)
    assert [ex["task"] for ex in a] == ["docstring"] * 20 + ["continuation"] * 20
    for ex in a:
        choice.check_example(ex, "builtin")
        assert len(set(ex["endings"])) == 4
        if ex["task"] == "docstring":  # the real summary is the signature's docstring's first line
            head = ex["ctx"].rstrip("\n")
            assert dict(builtin.summaries())[head] == ex["endings"][ex["label"]]
        else:
            full = ex["ctx"].split("\n", 1)[1] + " " + ex["endings"][ex["label"]]
            assert full in {line for _, line in builtin.summaries()}
    labels = [ex["label"] for ex in a]
    assert len(set(labels)) > 1  # the right answer is not always in one place


# --------------------------------------------------------------------------------------------------
# generative


def brute_force_pass_at_k(n, c, k):
    """Every k-subset of n samples (c of them passing), the share with at least one pass."""
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert generative.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 100) overflows a float; the product form does not
    assert generative.pass_at_k(1000, 0, 100) == 0.0 and generative.pass_at_k(1000, 1000, 100) == 1.0
    assert generative.pass_at_k(1000, 10, 1) == pytest.approx(0.01)
    assert generative.pass_at_k(1000, 1, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        generative.pass_at_k(4, 5, 1)


def test_final_answer_and_exact_match():
    assert generative.final_answer("so 3 + 4 = 7\n#### 1,234 ") == "1234"
    assert generative.final_answer("#### 7\n\nQuestion: and 2 + 2?") == "7"
    assert generative.final_answer(" Paris\n") == "paris"
    grade = generative.exact_match({"q": "1234"})
    assert grade("q", "#### 1,234") == 1.0 and grade("q", "1235") == 0.0 and grade("q", " 1234\n") == 1.0


def test_evaluate_generative_counts_passes_and_greedy(tok):
    model = make_model(tok, maxT=64)
    prompts = ["It was the", [{"role": "user", "content": "age of"}]]
    # grade: pass when the completion starts with the model's own greedy first token text
    first = {}
    for p in prompts:
        ids = generative.prompt_ids(tok, p)
        first[p if isinstance(p, str) else json.dumps(p)] = tok.decode(generate(model, ids, 1, temperature=0)[0])
    grader = lambda prompt, completion: float(completion.startswith(first[prompt]))  # noqa: E731
    r = generative.evaluate_generative(model, tok, prompts, grader, n=6, k=[1, 3], temperature=1.0,
                                       max_new_tokens=5, seed=1)
    assert r["greedy"] == 1.0  # greedy decoding starts with the greedy token, by construction
    for row in r["per_prompt"]:
        assert len(row["samples"]) == 6 and row["passed"] == sum(g >= 1 for g in row["grades"])
        assert row["greedy"].startswith(first[row["prompt"]])
    for k in (1, 3):
        want = np.mean([generative.pass_at_k(6, row["passed"], k) for row in r["per_prompt"]])
        assert r[f"pass@{k}"] == pytest.approx(want)
    with pytest.raises(ValueError, match="k must be in"):
        generative.evaluate_generative(model, tok, prompts, grader, n=2, k=[3])


# --------------------------------------------------------------------------------------------------
# the command line


@pytest.fixture
def files(tok, tmp_path):
    make_model(tok, maxT=128).save(tmp_path / "m.bin")
    tok.save(str(tmp_path / "tok.model"))
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in EXAMPLES))
    (tmp_path / "gen.jsonl").write_text(json.dumps({"prompt": "It was the", "answer": "best"}) + "\n" +
                                        json.dumps({"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}) + "\n")
    return tmp_path


def test_cli_json(files, capsys):
    argv = ["eval", str(files / "m.bin"), "--tokenizer", str(files / "tok.model"),
            "--text", str(files / "t.txt"), "--choice", str(files / "mc.jsonl"), "--generative",
            str(files / "gen.jsonl"), "--samples", "4", "--k", "1,2", "--max-new-tokens", "4", "--json",
            "--out", str(files / "r.json")]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads((files / "r.json").read_text())
    assert set(r["loss"][str(files / "t.txt")]) == {"loss", "tokens", "bytes", "bpb"}
    mc = r["choice"][str(files / "mc.jsonl")]
    assert mc["n"] == 3 and 0 <= mc["acc_norm"] <= 1 and "predictions" not in mc
    g = r["generative"][str(files / "gen.jsonl")]
    assert g["prompts"] == 2 and {"pass@1", "pass@2", "greedy", "mean_grade"} <= set(g)
    assert main(argv[:4] + ["--choice", str(files / "mc.jsonl"), "--chat"]) == 0
    table = capsys.readouterr().out
    assert "mc.jsonl (chat)" in table and "acc" in table


def test_cli_run_directory_and_builtin(files, capsys):
    """A run directory means its newest checkpoint and its tokenizer.model; no task: the built-in set."""
    run = files / "run"
    run.mkdir()
    (run / "ckpt_000010.bin").write_bytes((files / "m.bin").read_bytes())
    (run / "tokenizer.model").write_bytes((files / "tok.model").read_bytes())
    assert main(["eval", str(run), "--max-examples", "8"]) == 0
    out = capsys.readouterr().out
    assert "ckpt_000010.bin" in out and "docstring" in out and "continuation" in out and "8 examples" in out
    assert main(["eval", "--write-builtin", str(files / "b.jsonl"), "--max-examples", "6"]) == 0
    assert len(choice.read_examples(str(files / "b.jsonl"))) == 6


@pytest.mark.parametrize("extra, message", [
    (["--text", "/no/such.txt"], "not found: /no/such.txt"),
    (["--choice", "BAD"], "mc.jsonl:1: not JSON"),
    (["--generative", "MC"], "expected {\"prompt\""),
    (["--shards", "/no/shards_*.bin"], "no token shards match"),
    (["--samples", "2", "--k", "1,4"], "k must be comma-separated ints in [1, samples=2]"),
    (["--tokenizer", "OTHER"], "do not belong together"),
])
def test_cli_bad_input_is_one_line(files, capsys, extra, message):
    (files / "bad").mkdir()
    (files / "bad" / "mc.jsonl").write_text("{oops\n")
    Tokenizer.train(TEXT, vocab_size=270).save(str(files / "bad" / "other.model"))
    swap = {"BAD": files / "bad" / "mc.jsonl", "MC": files / "mc.jsonl", "OTHER": files / "bad" / "other.model"}
    extra = [str(swap.get(a, a)) for a in extra]
    argv = ["eval", str(files / "m.bin"), "--tokenizer", str(files / "tok.model")] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
