"""`minigpt sample`: continue a prompt with a trained model, streaming to the terminal.

    minigpt sample runs/NAME --prompt "def " --temperature 0.8
    minigpt sample ckpt_000300.bin --tokenizer tokenizer.model --num-samples 4

A run directory means its newest checkpoint and its tokenizer; a checkpoint file may name its
tokenizer with --tokenizer (minigpt's own file, llm.c's .bin or a .tiktoken rank file).
"""
import sys
from dataclasses import dataclass

from .. import settings
from ..fileio import resolve_model
from ..model import GPT
from ..model.backend import RuntimeSettings, set_threads
from ..plot import plot_attention
from ..tokenizer import load_tokenizer
from . import kvcache
from .generate import StreamDecoder, stream_tokens
from .sampling import SamplingSettings


@dataclass
class SampleSettings:
    prompt: str = None          # text to continue (default: the <|endoftext|> token)
    prompt_ids: str = None      # comma- or space-separated token ids instead of text
    num_samples: int = 1        # samples of the prompt, decoded as one batch
    stop_at_eot: bool = False   # end a sample at the <|endoftext|> token
    half: bool = False          # decode with bf16 weights (a bf16 v5 checkpoint always does)
    attention: str = None       # also draw the prompt's and first sample's attention to this PNG
    layer: int = -1             # which layer --attention draws (default: the last)

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, found {self.num_samples}")
        if self.num_samples > 1024:
            raise ValueError(f"num_samples must be <= 1024 (one batch), found {self.num_samples}")


def open_model(path, tokenizer=None, half=None):
    """(DecodeWeights, tokenizer or None, checkpoint path) for a run directory or a checkpoint file.
    A tokenizer with ids the model does not have is refused before anything runs."""
    ckpt, run_tok = resolve_model(path)
    weights = kvcache.DecodeWeights.load(ckpt, half=half)
    tok_path = tokenizer or run_tok
    tok = load_tokenizer(tok_path) if tok_path else None
    V = weights.config.vocab_size
    if tok is not None and tok.n_vocab != V:
        raise ValueError(f"{tok_path}: the tokenizer has {tok.n_vocab} ids but the model {ckpt} has a "
                         f"vocabulary of {V}: they do not belong together")
    return weights, tok, ckpt


def add_arguments(p):
    p.add_argument("model", help="a run directory (its newest checkpoint) or a checkpoint .bin")
    p.add_argument("--tokenizer", help="tokenizer file (default: the run directory's tokenizer.model)")
    settings.add_arguments(p, SampleSettings, SamplingSettings, RuntimeSettings)


def run(args):
    s = settings.build(SampleSettings, settings.from_args(args, SampleSettings))
    gen = settings.build(SamplingSettings, settings.from_args(args, SamplingSettings))
    rt = settings.build(RuntimeSettings, settings.from_args(args, RuntimeSettings))
    if rt.threads:
        set_threads(rt.threads)
    weights, tok, ckpt = open_model(args.model, args.tokenizer, half=True if s.half else None)
    eot = None if tok is None else tok.special_tokens.get("<|endoftext|>")
    if s.prompt_ids is not None:
        try:
            prompt = [int(x) for x in s.prompt_ids.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"--prompt-ids must be integers, found {s.prompt_ids[:40]!r}") from None
    elif s.prompt is not None:
        if tok is None:
            raise ValueError("--prompt needs a tokenizer: --tokenizer FILE, or a run directory that has one")
        prompt = tok.encode(s.prompt, allowed_special="all")
    elif eot is not None:
        prompt = [eot]
    else:
        raise ValueError("give --prompt or --prompt-ids")
    stop = [eot] if s.stop_at_eot and eot is not None else None
    out = sys.stdout
    steps = stream_tokens(weights, prompt, gen.max_new_tokens, gen.temperature, gen.top_k, gen.top_p,
                          gen.seed, s.num_samples, stop, rt.backend)
    samples = [[] for _ in range(s.num_samples)]
    if s.num_samples == 1:  # stream to the terminal as tokens arrive
        dec = StreamDecoder(tok) if tok else None
        out.write(s.prompt if s.prompt is not None and dec else "")
        for step in steps:
            for _, t in step:
                samples[0].append(t)
                out.write(dec.push([t]) if dec else f"{t} ")
            out.flush()
        out.write((dec.flush() if dec else "") + "\n")
    else:
        for step in steps:
            for i, t in step:
                samples[i].append(t)
        for j, ids in enumerate(samples):
            body = tok.decode(ids) if tok else " ".join(map(str, ids))
            out.write(f"--- sample {j}\n{body}\n")
    if s.attention:
        draw_attention(ckpt, prompt + samples[0], tok, s.attention, s.layer)
    return 0


def draw_attention(ckpt, ids, tok, png, layer):
    """--attention: the full model on prompt + sample (its last block_size tokens), one layer's heads."""
    model = GPT.load(ckpt, backend="numpy")  # the training model keeps every attention pattern
    if not -model.config.n_layer <= layer < model.config.n_layer:
        raise ValueError(f"--layer {layer} is out of range: the model has {model.config.n_layer} layers")
    ids = ids[-model.config.block_size:]
    labels = [repr(tok.decode([t]))[1:-1] if tok else str(t) for t in ids]
    path, _ = plot_attention(model, ids, png, labels, layer)
    if path:
        print(f"attention map: {path}", file=sys.stderr)
