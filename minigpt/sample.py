"""Generating text: sampling, the generation loop over a KV cache, and `minigpt sample`.

    generate(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, n, stop)

1. Every prompt is prefilled once, in one pass (minigpt/kvcache.py); its n samples copy its cache.
2. Then each step feeds every live stream its last token (one row per stream) and samples the next
   from the logits. A stream ends at a stop token (not included in its output), after
   max_new_tokens, or when its context is full (block_size tokens: no sliding window).

Sampling: temperature scales the logits (0 = greedy, argmax); top-k keeps the k most likely tokens;
top-p keeps the smallest set of most likely tokens whose probability reaches p (nucleus sampling);
what is kept is renormalised and one token drawn by inverse CDF. Stream j of a prompt draws from
its own generator, seeded (seed, j): the same seed gives the same text, alone or in a batch.
"""
import codecs
import os
import sys

import numpy as np

from . import kvcache

# --------------------------------------------------------------------------------------------------
# samplers


def filtered_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution a sample is drawn from: softmax(logits / temperature), truncated to the
    top-k and/or top-p tokens and renormalised. logits: (V,) -> float64 probabilities (V,)."""
    z = np.asarray(logits, dtype=np.float64) / temperature  # (V,)
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]           # the k-th largest logit
        z = np.where(z >= kth, z, -np.inf)              # ties with the k-th are kept
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")           # most likely first
        before = np.cumsum(p[order]) - p[order]         # mass of the tokens ranked above each
        p[order[before >= top_p]] = 0.0                 # keep while the mass so far is < p
        p /= p.sum()
    return p


def sample_token(logits, temperature, top_k, top_p, rng):
    if temperature == 0:
        return int(np.argmax(logits))
    p = filtered_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), p.size - 1))


def check_sampling(temperature, top_k, top_p, seed):
    if temperature is None or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), found {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, found {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, found {top_p}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, found {seed!r}")


# --------------------------------------------------------------------------------------------------
# the generation loop


def normalize_prompts(prompt_ids, config):
    """One prompt (a list of ints) or a list of prompts -> (list of int lists, was_single)."""
    if isinstance(prompt_ids, np.ndarray):
        prompt_ids = prompt_ids.tolist()
    prompt_ids = list(prompt_ids)
    single = len(prompt_ids) == 0 or isinstance(prompt_ids[0], (int, np.integer))
    prompts = [prompt_ids] if single else [list(p) for p in prompt_ids]
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token "
                             f"(e.g. <|endoftext|>)")
        if len(p) > config.block_size:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than block_size={config.block_size}: "
                             f"shorten it (there is no sliding window)")
        bad = [t for t in p if not (isinstance(t, (int, np.integer)) and 0 <= t < config.vocab_size)]
        if bad:
            raise ValueError(f"prompt {i}: token ids must be ints in [0, vocab_size={config.vocab_size}), "
                             f"found {bad[:5]}")
    return [[int(t) for t in p] for p in prompts], single


def stream_tokens(weights, prompt_ids, max_new_tokens=64, temperature=1.0, top_k=None, top_p=None,
                  seed=0, n=1, stop=None, kernels=None):
    """Yield, step by step, a list of (stream, token) for the streams that produced one. Stream
    i * n + j is sample j of prompt i. weights: a GPT model or kvcache.DecodeWeights."""
    if not isinstance(weights, kvcache.DecodeWeights):
        weights = kvcache.DecodeWeights.from_model(weights)
    cfg = weights.config
    prompts, _ = normalize_prompts(prompt_ids, cfg)
    check_sampling(temperature, top_k, top_p, seed)
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be >= 1, found {n}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, found {max_new_tokens}")
    stop = set() if stop is None else {int(stop)} if isinstance(stop, (int, np.integer)) else set(map(int, stop))
    kern = kvcache.kernels(kernels) if kernels is None or isinstance(kernels, str) else kernels
    if max_new_tokens == 0:
        return
    P, B = len(prompts), len(prompts) * n
    maxT = min(cfg.block_size, max(len(p) for p in prompts) + max_new_tokens)
    cache = kvcache.KVCache(cfg, B, maxT)
    rngs = [np.random.default_rng([int(seed), j]) for i in range(P) for j in range(n)]
    V = cfg.vocab_size

    # prefill: prompt i into stream i * n, then its other samples copy that stream's cache
    logits = kvcache.prefill(weights, cache, prompts, kern, streams=[i * n for i in range(P)])  # (P, Vp)
    for i in range(P):
        for j in range(1, n):
            cache.copy_stream(i * n, i * n + j)
    logits = np.repeat(logits, n, axis=0)                # (B, Vp)
    live = list(range(B))
    produced = np.zeros(B, dtype=np.int64)
    while live:
        step, nxt = [], []
        for row, s in enumerate(live):
            t = sample_token(logits[row, :V], temperature, top_k, top_p, rngs[s])
            if t in stop:
                continue
            step.append((s, t))
            produced[s] += 1
            if produced[s] < max_new_tokens and cache.lengths[s] < maxT:
                nxt.append((s, t))
        if step:
            yield step
        live = [s for s, _ in nxt]
        if live:
            logits = kvcache.decode_step(weights, cache, [t for _, t in nxt], live, kern)


def generate(weights, prompt_ids, max_new_tokens=64, temperature=1.0, top_k=None, top_p=None, seed=0,
             n=1, stop=None, kernels=None):
    """New token ids: a list of n lists for one prompt, or n lists per prompt (prompt-major) for a
    list of prompts. See the module docstring."""
    prompts, _ = normalize_prompts(prompt_ids, weights.config)
    out = [[] for _ in range(len(prompts) * n)]
    for step in stream_tokens(weights, prompts, max_new_tokens, temperature, top_k, top_p, seed,
                              n, stop, kernels):
        for s, t in step:
            out[s].append(t)
    return out


# --------------------------------------------------------------------------------------------------
# tokenizers: minigpt's own, or llm.c's decode table (.bin) for checkpoints that come from llm.c

TOKENIZER_MAGIC, TOKENIZER_VERSION = 20240328, 2


class LlmcTokenizer:
    """llm.c's tokenizer .bin (20240328 v2): a decode table, no merges. Encoding maps each byte to
    its single-byte token: exact for a byte-level vocabulary, a valid (not BPE-canonical) encoding
    for a BPE one."""

    def __init__(self, path):
        from .fileio import FileFormatError
        with open(path, "rb") as f:
            data = f.read()
        header = np.frombuffer(data[:1024], dtype="<i4") if len(data) >= 1024 else None
        if header is None or header[0] != TOKENIZER_MAGIC or header[1] != TOKENIZER_VERSION:
            found = "a short file" if header is None else f"magic {header[0]} version {header[1]}"
            raise FileFormatError(f"{path}: not an llm.c tokenizer: expected magic {TOKENIZER_MAGIC} "
                                  f"version {TOKENIZER_VERSION}, found {found}")
        n, self.eot = int(header[2]), int(header[3])
        self.tokens, at = [], 1024
        for i in range(n):
            if at >= len(data) or at + 1 + data[at] > len(data):
                raise FileFormatError(f"{path}: truncated llm.c tokenizer: token {i} of {n} runs past "
                                      f"the end of the file ({len(data)} bytes)")
            self.tokens.append(data[at + 1:at + 1 + data[at]])
            at += 1 + data[at]
        self.byte_id = {t[0]: i for i, t in enumerate(self.tokens) if len(t) == 1 and i != self.eot}
        self.n_vocab = n

    def decode_bytes(self, ids):
        return b"".join(self.tokens[i] for i in ids)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode(self, text, **_):
        data = text.encode("utf-8")
        missing = sorted({b for b in data if b not in self.byte_id})
        if missing:
            raise ValueError(f"this tokenizer has no single-byte token for bytes {missing[:5]}")
        return [self.byte_id[b] for b in data]


def write_llmc_tokenizer(path, tokens, eot):
    """Write an llm.c tokenizer .bin: header, then per token a uint8 length and its bytes."""
    from .fileio import atomic_write, make_header

    def write(f):
        f.write(make_header(TOKENIZER_MAGIC, TOKENIZER_VERSION, len(tokens), eot).tobytes())
        for t in tokens:
            if not 1 <= len(t) <= 255:
                raise ValueError(f"llm.c tokenizer tokens must be 1..255 bytes, found {len(t)}")
            f.write(bytes([len(t)]) + bytes(t))
    atomic_write(path, write)


def load_tokenizer(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) == 8 and int.from_bytes(head[:4], "little") == TOKENIZER_MAGIC:
        return LlmcTokenizer(path)
    from .tokenizer import Tokenizer
    return Tokenizer.load(path)


class StreamDecoder:
    """Token ids in, text out as soon as it is complete UTF-8: a character split across two tokens
    is held back until its last byte arrives."""

    def __init__(self, tok):
        self.tok = tok
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids):
        return self.utf8.decode(self.tok.decode_bytes(ids))

    def flush(self):
        return self.utf8.decode(b"", final=True)


# --------------------------------------------------------------------------------------------------
# the command line: minigpt sample


def add_arguments(p):
    p.add_argument("--checkpoint", required=True, help="llm.c checkpoint (fp32 v3 or bf16 v5)")
    p.add_argument("--tokenizer", help="minigpt tokenizer file or llm.c tokenizer .bin "
                                       "(without one, --prompt-ids is needed and ids are printed)")
    p.add_argument("--prompt", default=None, help="text to continue (default: the EOT token)")
    p.add_argument("--prompt-ids", default=None, help="comma- or space-separated token ids instead of text")
    p.add_argument("--max-new-tokens", "-n", type=int, default=256)
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="samples of the prompt, decoded as one batch")
    p.add_argument("--stop-at-eot", action="store_true", help="end a sample at the EOT token")
    p.add_argument("--half", action="store_true", help="decode with bf16 weights (a v5 checkpoint always does)")
    p.add_argument("--kernels", choices=["c", "numpy"], default=None, help="decode kernels (default: C if built)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--attention", metavar="PNG", default=None,
                   help="also draw the attention patterns of the prompt and (first) sample to this PNG")
    p.add_argument("--layer", type=int, default=-1, help="which layer --attention draws (default: the last)")


def run(args):
    try:
        weights = kvcache.DecodeWeights.load(args.checkpoint, half=True if args.half else None)
        tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
    except (OSError, ValueError, RuntimeError) as e:  # missing or damaged files: say which, no traceback
        print(f"minigpt sample: {e}", file=sys.stderr)
        return 1
    if args.threads and kvcache.c_available():
        from . import kvcache_c
        kvcache_c.set_threads(args.threads)
    eot = getattr(tok, "eot", None)
    if eot is None and tok is not None:
        eot = getattr(tok, "special_tokens", {}).get("<|endoftext|>")
    if args.prompt_ids is not None:
        prompt = [int(x) for x in args.prompt_ids.replace(",", " ").split()]
    elif args.prompt is not None:
        if tok is None:
            raise SystemExit("--prompt needs --tokenizer (or give --prompt-ids)")
        prompt = tok.encode(args.prompt, allowed_special="all")
    elif eot is not None:
        prompt = [eot]
    else:
        raise SystemExit("give --prompt or --prompt-ids")
    stop = [eot] if args.stop_at_eot and eot is not None else None
    out = sys.stdout
    steps = stream_tokens(weights, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                          args.seed, args.num_samples, stop, args.kernels)
    samples = [[] for _ in range(args.num_samples)]
    if args.num_samples == 1:  # stream to the terminal as tokens arrive
        dec = StreamDecoder(tok) if tok else None
        out.write(args.prompt if args.prompt is not None and dec else "")
        for step in steps:
            for _, t in step:
                samples[0].append(t)
                out.write(dec.push([t]) if dec else f"{t} ")
            out.flush()
        out.write((dec.flush() if dec else "") + "\n")
        return draw_attention(args, prompt + samples[0], tok)
    for step in steps:
        for s, t in step:
            samples[s].append(t)
    for j, ids in enumerate(samples):
        body = tok.decode(ids) if tok else " ".join(map(str, ids))
        out.write(f"--- sample {j}\n{body}\n")
    return draw_attention(args, prompt + samples[0], tok)


def draw_attention(args, ids, tok):
    """--attention: the full model on prompt + sample (its last block_size tokens), one layer's heads."""
    if not args.attention:
        return 0
    from .model import GPT
    from .plot import plot_attention
    model = GPT.load(args.checkpoint, backend="numpy")
    ids = ids[-model.config.block_size:]
    labels = [repr(tok.decode([t]))[1:-1] if tok else str(t) for t in ids]
    path, _ = plot_attention(model, ids, args.attention, labels, args.layer)
    if path:
        print(f"attention map: {path}", file=sys.stderr)
    return 0
