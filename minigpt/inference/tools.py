"""Tool calls inside generation: the model writes a call, the tool's answer is forced into its stream.

    box = ToolBox(tok, index=search_index)          # the calculator always; search when given an index
    runner = ToolEngine(Engine(weights, slots=8), box)
    sid = runner.add(prompt_ids, temperature=0, max_new_tokens=128, stop=[im_end])
    while runner.live():
        for event in runner.step(): ...             # (sid, token, finish, forced ids)
    runner.result(sid)                              # every token after the prompt, and which were forced

A ToolWatch follows one stream's tokens. It opens at <|tool_start|> or <SEARCH_START>, collects
the tokens after it, and at the matching <|tool_end|> / <SEARCH_END> decodes them, runs the tool
(`calculator: EXPR` -> minigpt/inference/calculator.py; a search query -> BM25 snippets from
minigpt/inference/search.py) and returns the ids to force:

    <|output_start|> RESULT <|output_end|>

ToolEngine drives the continuous-batching Engine (engine.py): after each step, a stream whose
token closed a call gets those ids through Engine.force (one prefill of the forced rows, not
sampled), and its next token is sampled after them, while the other streams go on decoding as if
nothing happened. A stream's tokens therefore do not depend on its neighbours, tools or not
(tests/test_tools_engine.py). `forced` marks the forced tokens, so SFT and RL give them loss weight
0. A tool never raises into generation: a bad call gets "error: ..." as its output.
"""
from ..tokenizer.chat import (OUTPUT_END, OUTPUT_START, SEARCH_END, SEARCH_START, TOOL_END, TOOL_START,
                              output_ids, special_id)
from .calculator import calculate
from .search import snippets

MAX_OUTPUT_TOKENS = 96   # a tool's output is cut to this many tokens (markers aside)
MAX_CALL_TOKENS = 256    # a call longer than this is closed with an error, not collected forever


class ToolBox:
    """The tools a model may call, by name, and the tokenizer that turns calls and answers into ids.
    tools: {name: function(arguments text) -> output text}; the calculator is always there, "search"
    when an index is given (search_k passages within search_budget tokens)."""

    def __init__(self, tok, tools=None, index=None, search_k=1, search_budget=56,
                 max_output_tokens=MAX_OUTPUT_TOKENS):
        self.tok = tok
        self.ids = {name: special_id(tok, name) for name in
                    (TOOL_START, TOOL_END, SEARCH_START, SEARCH_END, OUTPUT_START, OUTPUT_END)}
        self.tools = {"calculator": calculate}
        if index is not None:
            count = lambda text: len(tok.encode_ordinary(text))  # noqa: E731  (budget in tokens)
            self.tools["search"] = lambda query: snippets(index, query, search_k, search_budget, count)
        self.tools.update(tools or {})
        self.max_output_tokens = max_output_tokens

    def run(self, kind, text):
        """The output of a call: kind "tool" (text is `NAME: ARGUMENTS`) or "search" (text is the query)."""
        if kind == "search":
            name, args = "search", text
        else:
            name, colon, args = text.partition(":")
            name = name.strip()
            if not colon:
                return "error: a tool call is NAME: ARGUMENTS, e.g. calculator: 12*34"
        if name not in self.tools:
            return f"error: no tool named {name[:40]!r} (tools: {', '.join(sorted(self.tools))})"
        try:
            return str(self.tools[name](args.strip()))
        except Exception as e:  # a tool's failure is the model's to read, never the user's crash
            return f"error: {type(e).__name__}: {e}"[:200]

    def forced_ids(self, kind, text):
        """The ids forced after a call: the output, cut to max_output_tokens, between its markers."""
        ids = output_ids(self.tok, self.run(kind, text))
        if len(ids) - 2 > self.max_output_tokens:
            ids = ids[:1 + self.max_output_tokens] + ids[-1:]
        return ids

    def watch(self, prompt_ids=()):
        """A ToolWatch for one stream; prompt_ids (a prompt that ends inside a call) are seen first."""
        w = ToolWatch(self)
        for t in prompt_ids:
            if w.see(t):  # a call the prompt already closed (its output is in the prompt too)
                w.kind, w.buf = None, []
        return w


class ToolWatch:
    """One stream's call in progress. push(token) -> the ids to force now, or None. calls: every call
    so far as (kind, text, output ids)."""

    def __init__(self, box):
        self.box, self.kind, self.buf, self.calls = box, None, [], []
        ids = box.ids
        self.opens = {ids[TOOL_START]: "tool", ids[SEARCH_START]: "search"}
        self.closes = {ids[TOOL_END]: "tool", ids[SEARCH_END]: "search"}

    def see(self, t):
        """Track token t (sampled or forced) without running anything; True when it closes a call."""
        if t in self.opens:
            self.kind, self.buf = self.opens[t], []
            return False
        if self.kind is None:
            return False
        if self.closes.get(t) == self.kind:
            return True
        self.buf.append(t)
        return False

    def push(self, t):
        """A sampled token: the ids to force if it closes a call (or the call grew too long), else None."""
        closing = self.see(t)
        if not closing and not (self.kind and len(self.buf) > MAX_CALL_TOKENS):
            return None
        text = self.box.tok.decode(self.buf)
        if closing:
            ids = self.box.forced_ids(self.kind, text)
        else:
            ids = output_ids(self.box.tok, f"error: the call is longer than {MAX_CALL_TOKENS} tokens")
        self.calls.append((self.kind, text, ids))
        self.kind, self.buf = None, []
        return ids


class ToolEngine:
    """An Engine whose streams can call tools; see the module docstring."""

    def __init__(self, engine, box, record=True):
        self.engine, self.box, self.record = engine, box, record  # record: keep each stream's tokens for result()
        self.watches, self.tokens, self.forced, self.finish = {}, {}, {}, {}

    # the engine's slots, as the server's worker reads them
    free = property(lambda self: self.engine.free)
    cache = property(lambda self: self.engine.cache)
    maxT = property(lambda self: self.engine.maxT)

    def add(self, prompt_ids, *args, **sampling):
        """Engine.add's arguments; returns the stream id."""
        sid = self.engine.add(prompt_ids, *args, **sampling)
        self.watches[sid] = self.box.watch(prompt_ids)
        self.tokens[sid], self.forced[sid] = [], []
        return sid

    def live(self):
        return bool(self.engine.streams)

    def step(self):
        """One sampled token for every live stream, then the tools' answers forced into the streams
        that closed a call. Returns [(sid, token or None, finish, forced ids)]; finish as Engine.step,
        or "length" when a tool's answer does not fit the stream's context."""
        out = []
        for sid, t, finish in self.engine.step():
            forced = []
            if t is not None:
                if self.record:
                    self.tokens[sid].append(t)
                    self.forced[sid].append(False)
                ids = self.watches[sid].push(t)
                if ids and finish is None:
                    room = self.engine.maxT - self.engine.context_length(sid)
                    if len(ids) + 1 > room:  # the answer and one more token must fit
                        self.engine.cancel(sid)
                        finish = "length"
                    else:
                        self.engine.force(sid, ids)
                        forced = ids
                        if self.record:
                            self.tokens[sid] += ids
                            self.forced[sid] += [True] * len(ids)
            if finish is not None:
                self.finish[sid] = finish
                if not self.record:
                    self.forget(sid)
            out.append((sid, t, finish, forced))
        return out

    def cancel(self, sid):
        self.engine.cancel(sid)
        self.finish.setdefault(sid, "cancelled")
        if not self.record:
            self.forget(sid)

    def forget(self, sid):
        for d in (self.watches, self.tokens, self.forced, self.finish):
            d.pop(sid, None)

    def result(self, sid):
        """(tokens after the prompt, forced flags, finish) of a stream; forget it once it has ended."""
        out = (self.tokens[sid], self.forced[sid], self.finish.get(sid))
        if sid in self.finish:
            self.forget(sid)
        return out

    def calls(self, sid):
        return self.watches[sid].calls


def generate_with_tools(engine, box, prompts, max_new_tokens=64, temperature=0.0, top_k=None, top_p=None,
                        seed=0, stop=()):
    """[(tokens, forced flags, finish)] for each prompt, decoded as continuous-batching streams of
    `engine` (more prompts than slots wait for a free one). Prompt i samples with seed (seed, i):
    its tokens are the same whatever else runs beside it. This is what evaluation and RL rollouts call."""
    runner = ToolEngine(engine, box)
    todo, sids = list(range(len(prompts))), {}
    while todo or runner.live():
        while todo and runner.engine.free:
            i = todo.pop(0)
            sids[i] = runner.add(prompts[i], temperature=temperature, top_k=top_k, top_p=top_p, seed=(seed, i),
                                 max_new_tokens=max_new_tokens, stop=stop)
        runner.step()
    return [runner.result(sids[i]) for i in range(len(prompts))]
