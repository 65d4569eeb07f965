"""Step 5: the chat template, turning a conversation into token ids and a loss mask.

A conversation is a list of messages, {"role": ..., "content": ...} (OpenAI / Hugging Face
`messages`). Each message becomes

    <|im_start|>ROLE<|im_sep|>CONTENT<|im_end|>

where the three markers are special tokens added after pretraining (the base model never saw
them) and ROLE is ordinary text. Generation starts after `<|im_start|>assistant<|im_sep|>`.

The loss mask says which tokens SFT trains on: 1 on the assistant's content and its closing
<|im_end|> (so the model learns to stop), 0 on everything else (system, user and tool text, the
markers, the role names). Content is always ordinary text: a user who types "<|im_end|>" gets
those characters as text, never the control token.

Tool use adds six more special tokens (the model calls a tool between the first pair, the
engine forces the tool's answer between the last pair; see minigpt/inference/tools.py):

    <|tool_start|>calculator: (123*456)+7<|tool_end|><|output_start|>56095<|output_end|>
    <SEARCH_START>query<SEARCH_END><|output_start|>snippets<|output_end|>

A conversation writes a call as OpenAI's tool messages do: an assistant message with one entry in
"tool_calls", the tool's answer as the "tool" message after it, and the assistant going on in the
next message:

    {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
        "function": {"name": "calculator", "arguments": "(123*456)+7"}}]}
    {"role": "tool", "content": "56095"}
    {"role": "assistant", "content": "That is 56095."}

All three are ONE assistant turn in the tokens, as the engine produces it (no header in between):

    <|im_start|>assistant<|im_sep|><|tool_start|>calculator: (123*456)+7<|tool_end|><|output_start|>56095<|output_end|>That is 56095.<|im_end|>
    mask 0 ...             0        1   ...    1   ...   1        1          0     ...  0      0          1 ...   1       1

The call (its markers included) is trained on: the model must learn to make it. The output is
forced by the engine, never sampled, so its tokens and markers get loss weight 0. A tool named
"search" uses the seed's <SEARCH_START>QUERY<SEARCH_END> markers; any other name is written
`<|tool_start|>NAME: ARGUMENTS<|tool_end|>`. A "tool" message anywhere else is an ordinary message.
"""
IM_START, IM_SEP, IM_END = "<|im_start|>", "<|im_sep|>", "<|im_end|>"
CHAT_TOKENS = (IM_START, IM_SEP, IM_END)
TOOL_START, TOOL_END = "<|tool_start|>", "<|tool_end|>"
SEARCH_START, SEARCH_END = "<SEARCH_START>", "<SEARCH_END>"
OUTPUT_START, OUTPUT_END = "<|output_start|>", "<|output_end|>"
TOOL_TOKENS = (TOOL_START, TOOL_END, SEARCH_START, SEARCH_END, OUTPUT_START, OUTPUT_END)
ROLES = ("system", "user", "assistant", "tool")


def add_chat_tokens(tok):
    """Give tok the chat and tool special tokens (ids after its vocabulary and EOT; already
    present ones keep theirs). Returns {name: id}."""
    ids = tok.add_special_tokens(list(CHAT_TOKENS + TOOL_TOKENS))
    return dict(zip(CHAT_TOKENS + TOOL_TOKENS, ids))


def check_messages(messages):
    """A list of {"role": one of ROLES, "content": str} dicts, or a ValueError saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list, found {type(messages).__name__}"
                         f"{'' if not isinstance(messages, list) else ' of length 0'}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i} must be an object with role and content, found {type(m).__name__}")
        if m.get("role") not in ROLES:
            raise ValueError(f"message {i}: role must be one of {list(ROLES)}, found {m.get('role')!r}")
        if "tool_calls" in m:
            tool_call(m, i)
            if m.get("content") is None:  # OpenAI's clients send null beside tool calls
                m["content"] = ""
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be a string, found {type(m.get('content')).__name__}")
        try:
            m["content"].encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud800" escapes: not text, and lost by any encoding
            raise ValueError(f"message {i}: content has a lone surrogate (U+{ord(m['content'][e.start]):04X}) "
                             f"at character {e.start}, which is not Unicode text") from None
    return messages


def special_id(tok, name):
    if name not in tok.special_tokens:
        raise ValueError(f"this tokenizer has no {name} token: it needs the chat tokens "
                         f"(minigpt.tokenizer.chat.add_chat_tokens), which `minigpt sft` adds")
    return tok.special_tokens[name]


def tool_call(m, i):
    """(name, arguments) of an assistant message's one tool call, or a ValueError saying what is wrong."""
    calls = m["tool_calls"]
    if m.get("role") != "assistant":
        raise ValueError(f"message {i}: only an assistant message can make tool calls")
    if not isinstance(calls, list) or len(calls) != 1 or not isinstance(calls[0], dict):
        raise ValueError(f"message {i}: tool_calls must be a list of one call (each call's output "
                         f"comes before the next call), found {calls!r:.80}")
    fn = calls[0].get("function", calls[0])
    name, args = (fn.get("name"), fn.get("arguments")) if isinstance(fn, dict) else (None, None)
    if not isinstance(name, str) or not name.strip() or ":" in name or not isinstance(args, str):
        raise ValueError(f"message {i}: a tool call needs a name (text without ':') and arguments "
                         f"(text), found {calls[0]!r:.80}")
    return name.strip(), args


def call_ids(tok, name, args):
    """The tokens of one tool call, markers included."""
    if name == "search":
        return [special_id(tok, SEARCH_START)] + tok.encode_ordinary(args) + [special_id(tok, SEARCH_END)]
    return ([special_id(tok, TOOL_START)] + tok.encode_ordinary(f"{name}: {args}")
            + [special_id(tok, TOOL_END)])


def output_ids(tok, text):
    """The tokens the engine forces after a call: the tool's output between its markers."""
    return [special_id(tok, OUTPUT_START)] + tok.encode_ordinary(text) + [special_id(tok, OUTPUT_END)]


def render(tok, messages, add_generation_prompt=False):
    """(ids, mask): the conversation's token ids and its loss mask (1 = train on this token).
    With add_generation_prompt the ids end with `<|im_start|>assistant<|im_sep|>`, ready for the
    model to write the reply (a prompt: its mask is all 0); after a tool's output nothing is added,
    since the assistant's turn is still open."""
    check_messages(messages)
    start, sep, end = (special_id(tok, t) for t in CHAT_TOKENS)
    ids, mask = [], []
    state = "closed"                 # closed | called (after a call) | output (after its output)
    for i, m in enumerate(messages):
        if state == "called" and m["role"] != "tool":
            raise ValueError(f"message {i}: a tool call must be followed by its output, a tool message")
        if state == "output" and m["role"] != "assistant":
            raise ValueError(f"message {i}: after a tool's output the assistant goes on with the turn")
        if state == "called":        # the forced output: never trained on
            part = output_ids(tok, m["content"])
            ids, mask, state = ids + part, mask + [0] * len(part), "output"
            continue
        if state == "closed":
            head = [start] + tok.encode_ordinary(m["role"]) + [sep]
            ids, mask = ids + head, mask + [0] * len(head)
        body = tok.encode_ordinary(m["content"])
        if "tool_calls" in m:
            body += call_ids(tok, *tool_call(m, i))
            state = "called"
        else:
            body += [end]
            state = "closed"
        ids += body
        mask += [1 if m["role"] == "assistant" else 0] * len(body)
    if state == "called":
        raise ValueError("the conversation ends with a tool call and no tool message with its output")
    if add_generation_prompt and state == "closed":
        head = [start] + tok.encode_ordinary("assistant") + [sep]
        ids += head
        mask += [0] * len(head)
    return ids, mask


def parse(tok, ids):
    """The messages of a rendered conversation (render's inverse, the mask aside): a list of
    {"role", "content"}. A trailing generation prompt or unfinished reply comes back as a last
    message with the content so far. A ValueError says where ids break the template."""
    start, sep, end = (special_id(tok, t) for t in CHAT_TOKENS)
    ids = list(ids)
    messages, i = [], 0
    while i < len(ids):
        if ids[i] != start:
            raise ValueError(f"token {i}: expected {IM_START} (id {start}), found id {ids[i]}")
        try:
            j = ids.index(sep, i + 1)
        except ValueError:
            raise ValueError(f"token {i}: a message opens without {IM_SEP} after its role") from None
        k = ids.index(end, j + 1) if end in ids[j + 1:] else len(ids)
        if any(t in (start, sep) for t in ids[i + 1:j] + ids[j + 1:k]):
            raise ValueError(f"tokens {i}..{k}: a message contains another message's markers")
        messages.append({"role": tok.decode(ids[i + 1:j]), "content": tok.decode(ids[j + 1:k])})
        i = k + 1
    return messages


def render_prompt(tok, messages):
    """The ids that ask the model for the next assistant reply (the generation prompt)."""
    return render(tok, messages, add_generation_prompt=True)[0]
