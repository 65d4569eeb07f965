"""The OpenAI chat-completions protocol, without the HTTP: a request body in, checked settings out;
token ids in, the text a client may see out; the JSON objects of replies and stream chunks.

Everything a client sends is checked here, before it reaches the engine: a bad request is an
ApiError (HTTP 400 and OpenAI's error object: message, type, param, code), never a traceback.
"""
import json
import time
from dataclasses import dataclass

from ..inference.generate import StreamDecoder
from ..tokenizer.chat import IM_END, IM_START, ROLES, check_messages, render_prompt


@dataclass
class Limits:
    max_body_bytes: int = 1 << 20      # larger request bodies are refused (413) before they are read
    max_messages: int = 256            # messages in one conversation
    max_message_chars: int = 32_768    # characters in one message's content
    max_n: int = 8                     # choices per request (each takes a slot)
    max_stop: int = 4                  # stop strings per request (OpenAI's limit)
    max_stop_chars: int = 256          # characters in one stop string


class ApiError(Exception):
    def __init__(self, message, param=None, code=None, status=400, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self):
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    prompt: list            # the rendered conversation's token ids, ending <|im_start|>assistant<|im_sep|>
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None        # choice j draws from (seed, j); None: fresh entropy
    stop: list              # stop strings (the stop tokens are the engine's)
    n: int
    stream: bool
    include_usage: bool     # stream_options.include_usage: a last chunk with the token counts


def field(body, name, kinds, default, check=None, what=None):
    """body[name] if it has one of the types `kinds` (bool is never a number) and passes check."""
    v = body.get(name)
    if v is None:
        return default
    number = kinds in ((int,), (int, float))
    if not isinstance(v, kinds) or (number and isinstance(v, bool)):
        names = " or ".join(k.__name__ for k in kinds)
        raise ApiError(f"{name} must be {names}, found {type(v).__name__}", param=name, code="invalid_type")
    if check is not None and not check(v):
        raise ApiError(f"{name} must be {what}, found {v!r}", param=name, code="invalid_value")
    return v


def text_content(m, i):
    """A message's content as one string: a string, or a list of {"type": "text", "text": ...} parts."""
    c = m.get("content")
    if isinstance(c, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in c):
            raise ApiError(f"message {i}: content parts must be text parts ({{'type': 'text', 'text': ...}})",
                           param=f"messages.{i}.content", code="invalid_type")
        return "".join(p["text"] for p in c)
    return c


def parse_chat_request(raw, tok, maxT, limits):
    """Bytes of a POST /v1/chat/completions body -> ChatRequest, or ApiError saying what is wrong."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: [[[[...
        raise ApiError(f"the body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(f"the body must be a JSON object, found {type(body).__name__}", code="invalid_json")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError("messages must be a non-empty list of {role, content} objects", param="messages")
    if len(msgs) > limits.max_messages:
        raise ApiError(f"at most {limits.max_messages} messages, found {len(msgs)}", param="messages")
    conv = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ApiError(f"message {i} must be an object, found {type(m).__name__}", param=f"messages.{i}")
        role = "system" if m.get("role") == "developer" else m.get("role")  # OpenAI's newer name for system
        if role not in ROLES:
            raise ApiError(f"message {i}: role must be one of {list(ROLES)}, found {m.get('role')!r}",
                           param=f"messages.{i}.role")
        content = text_content(m, i)
        if isinstance(content, str) and len(content) > limits.max_message_chars:
            raise ApiError(f"message {i}: content has {len(content)} characters, at most "
                           f"{limits.max_message_chars}", param=f"messages.{i}.content")
        conv.append({"role": role, "content": content})
    try:
        check_messages(conv)
    except ValueError as e:
        raise ApiError(str(e), param="messages") from None

    n = field(body, "n", (int,), 1, lambda v: 1 <= v <= limits.max_n, f"in [1, {limits.max_n}]")
    temperature = field(body, "temperature", (int, float), 1.0, lambda v: 0 <= v <= 2, "in [0, 2]")
    top_p = field(body, "top_p", (int, float), 1.0, lambda v: 0 < v <= 1, "in (0, 1]")
    top_k = field(body, "top_k", (int,), None, lambda v: v >= 1, ">= 1")
    seed = field(body, "seed", (int,), None, lambda v: 0 <= v < 2**63, "in [0, 2**63)")
    stream = field(body, "stream", (bool,), False)
    opts = field(body, "stream_options", (dict,), {})
    include_usage = field(opts, "include_usage", (bool,), False)
    stop = field(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > limits.max_stop or not all(isinstance(s, str) and 0 < len(s) <= limits.max_stop_chars
                                              for s in stop):
        raise ApiError(f"stop must be a string or a list of at most {limits.max_stop} non-empty strings of at "
                       f"most {limits.max_stop_chars} characters", param="stop", code="invalid_value")
    field(body, "model", (str,), None)  # any name: there is one model

    prompt = render_prompt(tok, conv)
    room = maxT - len(prompt)  # positions left for the reply
    if room < 1:
        raise ApiError(f"the conversation is {len(prompt)} tokens; this model's context holds {maxT} "
                       f"with at least 1 for the reply", param="messages", code="context_length_exceeded")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = field(body, name, (int,), room, lambda v: 1 <= v <= maxT, f"in [1, {maxT}] (the context length)")
    return ChatRequest(prompt, min(max_tokens, room), float(temperature), top_k,
                       None if top_p == 1 else float(top_p), seed, stop, n, stream, include_usage)


# --------------------------------------------------------------------------------------------------
# token ids -> the text a client sees


class ChoiceText:
    """One choice's reply as it grows: complete UTF-8 characters only (StreamDecoder), cut before the
    first stop string, and text that could be the start of a stop string held back until it is not."""

    def __init__(self, tok, stops):
        self.dec, self.stops = StreamDecoder(tok), stops
        self.held, self.text, self.stopped, self.tokens = "", "", False, 0

    def push(self, ids):
        self.tokens += len(ids)
        return self.emit(self.held + self.dec.push(ids), final=False)

    def flush(self):
        return self.emit(self.held + self.dec.flush(), final=True)

    def emit(self, text, final):
        if self.stopped:  # nothing after a stop string
            return ""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            text, self.stopped, keep = text[:min(hits)], True, 0
        else:  # the longest tail of text that is the beginning of a stop string waits for more
            keep = 0 if final else max([k for s in self.stops for k in range(1, len(s))
                                        if text.endswith(s[:k])], default=0)
        out, self.held = text[:len(text) - keep], text[len(text) - keep:]
        self.text += out
        return out


def stop_token_ids(tok):
    """The tokens that end a reply: <|im_end|>; <|im_start|> (a new turn: the reply is over) and
    <|endoftext|> too, which a well-trained chat model does not write there."""
    return [i for name, i in tok.special_tokens.items() if name in (IM_END, IM_START, "<|endoftext|>")]


# --------------------------------------------------------------------------------------------------
# reply objects


def completion(rid, model, created, texts, finishes, prompt_tokens, completion_tokens):
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": j, "message": {"role": "assistant", "content": t}, "logprobs": None,
                         "finish_reason": f} for j, (t, f) in enumerate(zip(texts, finishes))],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(rid, model, created, j, delta, finish=None):
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": j, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def models_list(model, created):
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "minigpt"}]}


def now():
    return int(time.time())
