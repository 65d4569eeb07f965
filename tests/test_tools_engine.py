"""Tool calls inside generation: the template and the engine agree on the tokens of a call, the
output's tokens are forced (never sampled) and masked out of the loss, and a stream that calls
tools gives the same tokens alone or beside other streams."""
import http.client
import json

import numpy as np
import pytest

from minigpt.chat.server import Server
from minigpt.chat.session import ChatSession
from minigpt.config import PARAM_NAMES
from minigpt.inference import kvcache
from minigpt.inference.engine import Engine
from minigpt.inference.sampling import sample_token
from minigpt.inference.search import SearchIndex
from minigpt.inference.tools import ToolBox, generate_with_tools
from minigpt.model import GPT, GPTConfig, backend
from minigpt.posttrain.packing import PackedLoader, tokenize
from minigpt.posttrain.rollout import rollout, sequence
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer.chat import (IM_END, OUTPUT_END, OUTPUT_START, SEARCH_END, SEARCH_START, TOOL_END,
                                    TOOL_START, add_chat_tokens, output_ids, render, render_prompt)

KERNELS = ["numpy"] + (["c"] if "c" in backend.available() else [])
TEXT = "calculator: 12*34 + 5 = 413. The river Quenn is 431 km long. Search the docs. " * 30
DOCS = [("quenn", "The river Quenn is 431 km long and flows into lake Moor."),
        ("moor", "Lake Moor is 12 km wide.")]


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.train(TEXT, vocab_size=300)
    add_chat_tokens(t)
    return t


def call_model(tok, seed=0, maxT=160):
    return kvcache.DecodeWeights.from_model(call_gpt(tok, seed, maxT))


def call_gpt(tok, seed=0, maxT=160):
    """A random GPT whose sampled text often opens and closes tool calls: channel 0 of the final
    LayerNorm's output is always 10, and wte's column 0 turns it into a logit bias per token."""
    cfg = GPTConfig(block_size=maxT, vocab_size=tok.n_vocab, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg, backend="numpy", seed=seed)
    rng = np.random.default_rng(seed)
    for name in PARAM_NAMES:
        model.params[name][...] += 0.2 * rng.standard_normal(model.params[name].shape)
    model.params["wte"][tok.n_vocab:] = 0
    model.params["lnfw"][0], model.params["lnfb"][0] = 0.0, 10.0
    model.params["wte"][:, 0] = 0.0
    sp = tok.special_tokens
    model.params["wte"][sorted(sp.values()), 0] = -10.0  # chat markers and outputs: never sampled
    for name, bias in ((TOOL_START, 0.45), (TOOL_END, 0.5), (SEARCH_START, 0.4), (SEARCH_END, 0.5)):
        model.params["wte"][sp[name], 0] = bias
    return model


def replay(box, prompt, tokens, forced):
    """Check a stream against the rule: after each sampled token that closes a call come exactly the
    ids the tool gives (flagged forced), and nothing else is forced. Returns the number of calls."""
    w, i, calls = box.watch(prompt), 0, 0
    while i < len(tokens):
        assert not forced[i], f"token {i} is flagged forced but no call asked for it"
        ids = w.push(tokens[i])
        i += 1
        if ids and i < len(tokens):  # (a call closed by the stream's last token gets no output)
            assert tokens[i:i + len(ids)] == ids and all(forced[i:i + len(ids)])
            i, calls = i + len(ids), calls + 1
    return calls


@pytest.mark.parametrize("kern", KERNELS)
def test_calls_get_their_output_forced_and_never_sampled(tok, kern):
    w = call_model(tok)
    box = ToolBox(tok, index=SearchIndex.build(DOCS))
    prompts = [tok.encode_ordinary("The river"), tok.encode_ordinary("12*34"), [5, 6, 7]]
    outs = generate_with_tools(Engine(w, slots=2, kernels=kern), box, prompts, max_new_tokens=40,
                               temperature=1.0, seed=3)
    calls = 0
    for p, (tokens, forced, finish) in zip(prompts, outs):
        calls += replay(box, p, tokens, forced)
        assert finish == "length" and len(tokens) - sum(forced) == 40  # max_new_tokens counts sampled only
    assert calls >= 2  # the check above is not vacuous


@pytest.mark.parametrize("kern", KERNELS)
def test_sampled_tokens_follow_the_whole_context(tok, kern):
    """Teacher-force prompt + everything the stream produced in one prefill: each sampled token is what
    the stream's own generator draws from those logits, so the forced tokens sat at the right positions."""
    w = call_model(tok)
    box = ToolBox(tok)
    prompt = tok.encode_ordinary("calculator")
    (tokens, forced, _), = generate_with_tools(Engine(w, slots=1, kernels=kern), box, [prompt],
                                               max_new_tokens=30, temperature=1.0, top_k=50, seed=11)
    assert any(forced)
    full = prompt + tokens
    cache = kvcache.KVCache(w.config, 1)
    pos = np.arange(len(full))
    logits = kvcache.forward_cached(w, cache, full, np.zeros(len(full), np.int32), pos, backend.decode_kernels(kern),
                                    logit_rows=list(range(len(full))))  # (len(full), Vp)
    rng = np.random.default_rng([11, 0])
    for i, (t, f) in enumerate(zip(tokens, forced)):
        if not f:
            assert sample_token(logits[len(prompt) + i - 1, :w.config.vocab_size], 1.0, 50, None, rng) == t


@pytest.mark.parametrize("kern", KERNELS)
def test_alone_or_in_a_batch(tok, kern):
    w = call_model(tok)
    box = ToolBox(tok, index=SearchIndex.build(DOCS))
    prompt = tok.encode_ordinary("Search the docs")
    alone = generate_with_tools(Engine(w, slots=1, kernels=kern), box, [prompt], max_new_tokens=35,
                                temperature=1.0, seed=5)[0]
    others = [tok.encode_ordinary("The river Quenn"), [9, 8], tok.encode_ordinary("413")]
    # the stream of interest is prompt 0 of its seed: put it beside others, and later in a busy queue
    eng = Engine(w, slots=3, kernels=kern)
    batch = generate_with_tools(eng, box, [prompt] + others, max_new_tokens=35, temperature=1.0, seed=5)
    assert batch[0] == alone
    assert sum(map(sum, (f for _, f, _ in batch))) > 0  # its neighbours called tools too


def test_toolbox_answers(tok):
    box = ToolBox(tok, index=SearchIndex.build(DOCS), search_k=1)
    assert box.run("tool", "calculator: 4821*397") == "1913937"
    assert box.run("tool", " calculator :(2+3)*4 ") == "20"
    assert box.run("tool", "calculator: __import__('os')").startswith("error:")
    assert box.run("tool", "weather: Paris").startswith("error: no tool named 'weather'")
    assert box.run("tool", "12*3").startswith("error: a tool call is NAME: ARGUMENTS")
    assert "431 km" in box.run("search", "how long is the river Quenn")
    assert ToolBox(tok).run("search", "river").startswith("error: no tool named 'search'")
    boom = ToolBox(tok, tools={"boom": lambda a: 1 / 0})
    assert boom.run("tool", "boom: x").startswith("error: ZeroDivisionError")
    short = ToolBox(tok, index=SearchIndex.build(DOCS), max_output_tokens=5)
    ids = short.forced_ids("search", "river Quenn")
    assert len(ids) == 7 and ids[0] == tok.special_tokens[OUTPUT_START] and ids[-1] == tok.special_tokens[OUTPUT_END]


def tool_conversation():
    return [{"role": "user", "content": "What is 4821 * 397?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "calculator", "arguments": "4821*397"}}]},
            {"role": "tool", "content": "1913937"},
            {"role": "assistant", "content": "Then: ", "tool_calls": [
                {"type": "function", "function": {"name": "search", "arguments": "river Quenn"}}]},
            {"role": "tool", "content": "[quenn] The river Quenn is 431 km long."},
            {"role": "assistant", "content": "#### 1913937"}]


def test_template_renders_calls_as_the_engine_writes_them(tok):
    sp = tok.special_tokens
    msgs = tool_conversation()
    ids, mask = render(tok, msgs)
    call1 = [sp[TOOL_START]] + tok.encode_ordinary("calculator: 4821*397") + [sp[TOOL_END]]
    out1 = output_ids(tok, "1913937")
    call2 = tok.encode_ordinary("Then: ") + [sp[SEARCH_START]] + tok.encode_ordinary("river Quenn") + [sp[SEARCH_END]]
    out2 = output_ids(tok, "[quenn] The river Quenn is 431 km long.")
    tail = tok.encode_ordinary("#### 1913937") + [sp[IM_END]]
    prompt = render_prompt(tok, msgs[:1])
    assert ids == prompt + call1 + out1 + call2 + out2 + tail  # one assistant turn, one header
    want = [0] * len(prompt) + [1] * len(call1) + [0] * len(out1) + [1] * len(call2) + [0] * len(out2) + [1] * len(tail)
    assert mask == want
    # the forced output the engine would write is the one the template renders
    box = ToolBox(tok, index=SearchIndex.build(DOCS))
    assert box.forced_ids("tool", "calculator: 4821*397") == out1
    # a prompt that ends after a tool's output continues the open turn: no new header
    assert render_prompt(tok, msgs[:3]) == prompt + call1 + out1
    # OpenAI's null content beside a call, and the name-and-arguments short form
    alt = [msgs[0], {"role": "assistant", "content": None, "tool_calls": [{"name": "calculator",
                                                                            "arguments": "4821*397"}]}] + msgs[2:]
    assert render(tok, alt) == (ids, mask)


def test_packed_loss_weights_skip_tool_output(tok):
    ex = tokenize(tok, [{"messages": tool_conversation()}])
    ids, mask = ex[0]
    x, y, w = PackedLoader(ex, 1, len(ids) - 1).next_batch()
    out_start, out_end = tok.special_tokens[OUTPUT_START], tok.special_tokens[OUTPUT_END]
    inside, trained = False, 0
    for target, weight in zip(ids[1:], w[0]):
        inside = inside or target == out_start
        if inside:
            assert weight == 0
        trained += weight > 0
        if target == out_end:
            inside = False
    assert trained > 0 and w[0][list(ids[1:]).index(tok.special_tokens[TOOL_END])] == 1


@pytest.mark.parametrize("bad, why", [
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": []}], "list of one call"),
    ([{"role": "user", "content": "x", "tool_calls": [{"name": "calculator", "arguments": "1"}]}], "only an assistant"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"name": "a:b", "arguments": "1"}]},
      {"role": "tool", "content": "1"}], "name"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": "1"}]}], "ends with a tool call"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": "1"}]},
      {"role": "user", "content": "x"}], "followed by its output"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"name": "calculator", "arguments": "1"}]},
      {"role": "tool", "content": "1"}, {"role": "user", "content": "x"}], "goes on with the turn"),
])
def test_bad_tool_messages_say_why(tok, bad, why):
    with pytest.raises(ValueError, match=why):
        render(tok, bad)


def test_chat_session_runs_tools_and_tags_pieces(tok):
    w = call_model(tok)
    box = ToolBox(tok, index=SearchIndex.build(DOCS))
    s = ChatSession(w, tok, temperature=1.0, seed=2, max_new_tokens=40, tools=box)
    pieces = list(s.send("12*34"))
    outputs = [p for p in pieces if getattr(p, "kind", None) == "output"]
    assert outputs  # the biased model called a tool
    role, _, ids = s.messages[-1]
    head = render_prompt(tok, [{"role": "user", "content": "12*34"}])[-3:]
    reply = ids[len(head):-1]
    w2 = box.watch()
    calls = [w2.push(t) for t in reply]
    got = [tok.decode(c[1:-1]) for c in calls if c]
    assert got[:len(outputs)] == outputs  # each shown output is what the tool gave
    assert s.fed == len(s.history_ids()) - 1  # the cache holds every token but the reply's closing marker
    plain = ChatSession(w, tok, temperature=1.0, seed=2, max_new_tokens=40)
    assert not any(getattr(p, "kind", None) for p in plain.send("12*34"))


def test_server_forces_tool_output_into_the_reply(tok):
    w = call_model(tok)
    box = ToolBox(tok)
    server = Server(("127.0.0.1", 0), w, tok, slots=2, tools=box).start()
    try:
        host, port = server.url[len("http://"):].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        body = {"model": "m", "messages": [{"role": "user", "content": "12*34"}], "max_tokens": 40,
                "temperature": 1.0, "seed": 4}
        conn.request("POST", "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        conn.close()
    finally:
        server.close()
    text = reply["choices"][0]["message"]["content"]
    prompt = render_prompt(tok, body["messages"])
    (tokens, forced, _), = generate_with_tools(Engine(w, slots=1), box, [prompt], max_new_tokens=40,
                                               temperature=1.0, seed=4)
    assert any(forced) and text == tok.decode(tokens)  # the same stream as generate_with_tools, outputs included


def test_rl_rollouts_with_tools_never_train_on_forced_tokens(tok):
    class Task:
        def grade(self, problem, text):
            return float("413" in text)
    model = call_gpt(tok)
    box = ToolBox(tok)
    problems = [{"messages": [{"role": "user", "content": "12*34"}]}, {"messages": [{"role": "user", "content": "5"}]}]
    samples = rollout(model, tok, Task(), problems, 3, 30, temperature=1.0, seed=1, tools=box)
    assert len(samples) == 6 and [s.problem for s in samples] == [0, 0, 0, 1, 1, 1]
    forced_seen = 0
    for s in samples:
        ids, targets = sequence(s, tok.special_tokens[IM_END])
        assert len(s.forced) == len(s.reply)
        for i, f in enumerate(s.forced):
            t = targets[len(s.prompt) - 1 + i]
            assert (t == -1) if f else (t == s.reply[i])
        forced_seen += sum(s.forced)
    assert forced_seen > 0
