"""A conversation with a chat model: the history as token ids in one KV cache, replies streamed.

    s = ChatSession(weights, tok, system="You are helpful.", temperature=0)
    for piece in s.send("How many r's are in strawberry?"):   # text as it is generated
        print(piece, end="")

Each turn feeds only its new tokens, as csrc/run.c's chat mode does: the closing <|im_end|> of the
last reply (sampled, not yet fed), the user message, `<|im_start|>assistant<|im_sep|>`; then the
reply is sampled token by token until <|im_end|>. The history keeps the ids the model produced
(re-encoding a reply's text could tokenize it differently), so at temperature 0 a conversation is
the same here and in run.c.

With tools (a ToolBox, minigpt/inference/tools.py) a call the model writes is run when its closing
token is sampled and the output is fed in as forced tokens, exactly as the engine does for the
server and RL; the pieces of a call and of its output come as ToolPiece (a str with .kind "call" or
"output"), so a terminal can show them in another style.

When a turn no longer fits the context (block_size), the oldest exchanges are dropped (the system
prompt stays), the cache is refilled from what is left, and on_notice hears about it; a reply that
reaches the end of the context stops there, with a notice too.
"""
import numpy as np

from ..inference import kvcache
from ..inference.generate import StreamDecoder
from ..inference.sampling import check_sampling, sample_token
from ..model import backend
from ..tokenizer.chat import IM_END, IM_SEP, IM_START, TOOL_TOKENS, check_messages, special_id


class ToolPiece(str):
    """Text of a tool call ("call") or of its forced output ("output")."""

    def __new__(cls, text, kind):
        piece = super().__new__(cls, text)
        piece.kind = kind
        return piece


class ChatSession:
    def __init__(self, weights, tok, system=None, temperature=0.8, top_k=None, top_p=None, seed=0,
                 max_new_tokens=256, kernels=None, on_notice=None, tools=None):
        if not isinstance(weights, kvcache.DecodeWeights):
            weights = kvcache.DecodeWeights.from_model(weights)
        self.weights, self.tok, self.system = weights, tok, system
        self.start, self.sep, self.end = (special_id(tok, t) for t in (IM_START, IM_SEP, IM_END))
        if max(self.start, self.sep, self.end) >= weights.config.vocab_size:
            raise ValueError(f"the model's vocabulary ({weights.config.vocab_size}) lacks the tokenizer's chat "
                             f"tokens (ids up to {max(self.start, self.sep, self.end)}): is this an SFT checkpoint?")
        self.set_sampling(temperature, top_k, top_p)
        self.max_new_tokens = max_new_tokens
        self.kern = backend.decode_kernels(kernels) if kernels is None or isinstance(kernels, str) else kernels
        self.rng = np.random.default_rng(seed)
        self.on_notice = on_notice or (lambda message: None)
        self.tools = tools
        self.markers = {tok.special_tokens[t] for t in TOOL_TOKENS if t in tok.special_tokens}
        self.clear()

    def set_sampling(self, temperature=None, top_k=None, top_p=None):
        t = self.temperature if temperature is None else temperature
        check_sampling(t, top_k, top_p, 0)
        self.temperature, self.top_k, self.top_p = t, top_k, top_p

    def clear(self):
        """Forget the conversation (the system prompt stays)."""
        self.messages = []                       # [(role, content, ids of the rendered message)]
        if self.system:
            check_messages([{"role": "system", "content": self.system}])
            self.messages.append(("system", self.system, self.render("system", self.system)))
        self.cache = kvcache.KVCache(self.weights.config, 1)
        self.fed = 0                             # ids of the history already in the cache

    def render(self, role, content, ids=None):
        body = self.tok.encode_ordinary(content) if ids is None else list(ids)
        return [self.start] + self.tok.encode_ordinary(role) + [self.sep] + body + [self.end]

    def history_ids(self):
        return [t for _, _, ids in self.messages for t in ids]

    def feed(self, ids):
        """Append ids to the cache; returns the last one's logits (V,)."""
        pos = np.arange(self.fed, self.fed + len(ids))
        logits = kvcache.forward_cached(self.weights, self.cache, ids, np.zeros(len(ids), np.int32), pos,
                                        self.kern, logit_rows=[len(ids) - 1])
        self.fed += len(ids)
        return logits[0, :self.weights.config.vocab_size]

    def fit(self, new):
        """Drop the oldest exchanges until the history, `new` and room for a reply fit the context."""
        maxT = self.weights.config.block_size
        room = min(self.max_new_tokens, maxT // 4)
        first = 1 if self.system else 0
        keep = sum(len(ids) for _, _, ids in self.messages[:first])
        if keep + len(new) >= maxT:  # checked before anything is dropped: a refused message changes nothing
            raise ValueError(f"the message is too long for the context ({len(new)} tokens, block_size {maxT})")
        dropped = 0
        while len(self.history_ids()) + len(new) + room > maxT and len(self.messages) > first:
            del self.messages[first]             # the oldest message, and a reply left without its question
            dropped += 1
            while len(self.messages) > first and self.messages[first][0] != "user":
                del self.messages[first]
                dropped += 1
        if dropped:
            self.on_notice(f"the context ({maxT} tokens) is full: dropped the {dropped} oldest "
                           f"message{'s' if dropped > 1 else ''}")
            self.cache = kvcache.KVCache(self.weights.config, 1)
            self.fed = 0

    def send(self, text):
        """Add a user message; yield the reply's text as it is sampled (the reply then joins the history)."""
        check_messages([{"role": "user", "content": text}])
        user = self.render("user", text)
        head = [self.start] + self.tok.encode_ordinary("assistant") + [self.sep]
        self.fit(user + head)
        todo = self.history_ids()[self.fed:] + user + head   # after a drop: the whole kept history
        self.messages.append(("user", text, user))
        logits = self.feed(todo)
        reply, dec = [], StreamDecoder(self.tok)
        maxT = self.weights.config.block_size
        eot = self.tok.special_tokens.get("<|endoftext|>")
        watch = self.tools.watch() if self.tools else None
        sampled, call = 0, []  # call: the tokens of a tool call in progress, its opening marker first
        try:
            while sampled < self.max_new_tokens:  # forced tokens do not count
                t = sample_token(logits, self.temperature, self.top_k, self.top_p, self.rng)
                if t == self.end or t == eot:
                    break
                reply.append(t)
                sampled += 1
                opened = watch is not None and watch.kind is None and t in watch.opens
                forced = watch.push(t) if watch is not None else None
                if opened:                      # a call starts: the text so far first, the call whole later
                    tail = dec.flush()
                    if tail:
                        yield tail
                    call = [t]
                elif call:
                    call.append(t)
                    if watch.kind is None:      # closed (or cut for length)
                        yield ToolPiece(self.tok.decode(call[1:-1] if call[-1] in self.markers else call[1:]), "call")
                        call = []
                elif watch is None or t not in self.markers:  # (a stray marker is not text)
                    piece = dec.push([t])
                    if piece:
                        yield piece
                feed = [t] + (forced or [])
                if self.fed + len(feed) > maxT:  # no position left for t (and a tool's output)
                    self.on_notice(f"the reply reached the end of the context ({maxT} tokens) and stops here")
                    break
                if forced:
                    reply += forced
                    yield ToolPiece(self.tok.decode(forced[1:-1]), "output")
                logits = self.feed(feed)
            tail = dec.flush()
            if tail:
                yield tail
        finally:  # also when the reader stops early (Ctrl-C): the history must match the cache
            # the cache holds the reply's ids (up to self.fed) but not its closing <|im_end|>: the next turn feeds it
            self.messages.append(("assistant", self.tok.decode(reply), head + reply + [self.end]))

    def ask(self, text):
        """The whole reply to one user message, as text."""
        return "".join(self.send(text))
