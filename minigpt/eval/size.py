"""`minigpt size`: what a model of a given shape costs, before anyone trains it.

    parameters      every tensor's shape and count (GPT-2: minigpt's own tensors, model.param_shapes)
    inference       weight bytes at fp32 / bf16 / int8; KV-cache bytes per token and at full context
    training        weights + gradients + AdamW's two moments + activations for a batch B x T (GPT-2:
                    minigpt's own activation buffers, model.act_shapes) and their gradients
    compute         FLOPs per token (6N plus attention, minigpt/flops.py) and the time to train D tokens
                    at a machine's FLOP/s and an MFU

Two families. GPT-2 is the model minigpt trains. Llama-2 differs where it matters for size: RMSNorm
(a gain, no bias), no biases anywhere, a SwiGLU MLP with three matrices (gate w1, down w2, up w3) of
hidden size H (about 8C/3), rotary positions (no wpe), an output head of its own (not tied to the
embedding), and grouped-query attention in 70B (8 key/value heads shared by 64 query heads).
"""
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass

from ..fileio import CHECKPOINT_MAGIC, CHECKPOINT_VERSION_BF16, CHECKPOINT_VERSION_FP32, read_header
from .. import settings
from ..config import PRESETS as TRAIN_PRESETS  # minigpt's own sizes: tiny, small, 124M, 350M
from ..config import GPTConfig, act_shapes, param_shapes
from ..model.flops import flops_per_token, peak_flops
from ..pretrain.train import CLASSES as TRAIN_CLASSES
from ..pretrain.train import TrainSettings, model_config

# ---------------------------------------------------------------------------------------------------
# the shapes


@dataclass
class LlamaConfig:
    block_size: int = 4096   # maxT
    vocab_size: int = 32000  # V
    n_layer: int = 32        # L
    n_head: int = 32         # NH: query heads
    n_kv_head: int = 32      # KV: key/value heads (GQA when fewer than NH; each serves NH / KV queries)
    n_embd: int = 4096       # C
    ffn_hidden: int = None   # H: the SwiGLU width, by default Llama's rule (llama_hidden)

    def __post_init__(self):
        if self.ffn_hidden is None:
            self.ffn_hidden = llama_hidden(self.n_embd)
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                             f"and n_head by n_kv_head ({self.n_kv_head})")


def llama_hidden(C, multiple_of=256):
    """Llama's MLP width: 2/3 of 4C (three matrices cost what two of width 4C would), rounded up to a
    multiple of 256: 4096 -> 11008, 5120 -> 13824."""
    H = int(2 * 4 * C / 3)
    return (H + multiple_of - 1) // multiple_of * multiple_of


# name -> config; GPT-2's vocabulary is padded to 50304 as minigpt and llm.c build it
PRESETS = {
    "gpt2-124M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
    "gpt2-350M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-774M": GPTConfig(block_size=1024, vocab_size=50257, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-1.5B": GPTConfig(block_size=1024, vocab_size=50257, n_layer=48, n_head=25, n_embd=1600),
    "llama2-7B": LlamaConfig(n_layer=32, n_head=32, n_kv_head=32, n_embd=4096, ffn_hidden=11008),
    "llama2-13B": LlamaConfig(n_layer=40, n_head=40, n_kv_head=40, n_embd=5120, ffn_hidden=13824),
    "llama2-70B": LlamaConfig(n_layer=80, n_head=64, n_kv_head=8, n_embd=8192, ffn_hidden=28672),
}


def llama_param_shapes(cfg):
    L, C, V, H = cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.ffn_hidden
    KVC = cfg.n_kv_head * (C // cfg.n_head)  # width of the keys (and of the values)
    return {
        "tok_embeddings": (V, C),
        "attention_norm": (L, C),                                  # RMSNorm: a gain only
        "wq": (L, C, C), "wk": (L, KVC, C), "wv": (L, KVC, C), "wo": (L, C, C),
        "ffn_norm": (L, C),
        "w1": (L, H, C), "w2": (L, C, H), "w3": (L, H, C),         # gate, down, up
        "norm": (C,),
        "output": (V, C),                                          # untied head
    }


def llama_act_shapes(cfg, B, T):
    """The buffers a forward pass keeps for the backward if minigpt ran Llama the way it runs GPT-2:
    every intermediate stored (no recomputation), named after model.act_shapes."""
    L, C, NH, V, H = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.ffn_hidden
    hs = C // NH
    return {
        "encoded": (B, T, C),
        "ln1": (L, B, T, C), "ln1_rstd": (L, B, T),
        "qkv": (L, B, T, (NH + 2 * cfg.n_kv_head) * hs),          # q and k after the rotation
        "preatt": (L, B, NH, T, T), "att": (L, B, NH, T, T),
        "atty": (L, B, T, C), "attproj": (L, B, T, C), "residual2": (L, B, T, C),
        "ln2": (L, B, T, C), "ln2_rstd": (L, B, T),
        "fc_gate": (L, B, T, H), "fc_up": (L, B, T, H), "fc_swiglu": (L, B, T, H),
        "fcproj": (L, B, T, C), "residual3": (L, B, T, C),
        "lnf": (B, T, C), "lnf_rstd": (B, T),
        "logits": (B, T, V), "probs": (B, T, V), "losses": (B, T),
    }


def llama_flops_per_token(cfg, T, training=True):
    """As flops.flops_per_token, for Llama: 2 FLOPs per weight of every matrix a token goes through
    (not the embedding, a lookup), plus attention's q.k and att.v over on average T/2 positions."""
    C, KVC = cfg.n_embd, cfg.n_kv_head * (cfg.n_embd // cfg.n_head)
    N = (cfg.n_layer * (2 * C * C + 2 * KVC * C + 3 * C * cfg.ffn_hidden)  # wq wo, wk wv, w1 w2 w3
         + cfg.vocab_size * C)                                              # the output head
    attention = 2 * cfg.n_layer * T * C
    forward = 2 * N + attention
    return 3 * forward if training else forward


def is_llama(cfg):
    return isinstance(cfg, LlamaConfig)


def tensor_shapes(cfg):
    return llama_param_shapes(cfg) if is_llama(cfg) else param_shapes(cfg)


def count(shapes):
    return sum(math.prod(s) for s in shapes.values())


def kv_heads(cfg):
    return cfg.n_kv_head if is_llama(cfg) else cfg.n_head


def shape_for_params(N, arch="gpt2"):
    """A plausible shape of about N parameters: the depth L whose count comes closest, with widths
    from the family's rule. gpt2: C = 64 L, heads of 64 (nanochat's aspect ratio; L=12 is GPT-2
    124M). llama: C = 128 L, heads of 128, Llama's MLP width (L=32 is Llama-2 7B)."""
    best = None
    for L in range(1, 257):
        if arch == "llama":
            cfg = LlamaConfig(n_layer=L, n_head=L, n_kv_head=L, n_embd=128 * L)
        else:
            cfg = GPTConfig(block_size=1024, vocab_size=50257, n_layer=L, n_head=L, n_embd=64 * L)
        n = count(tensor_shapes(cfg))
        if best is None or abs(n - N) < abs(best[0] - N):
            best = (n, cfg)
        if n > N:
            break
    return best[1]


# ---------------------------------------------------------------------------------------------------
# the figures


def size_report(cfg, B=4, T=None, tokens=None, flops=None, mfu=0.4):
    """Every figure as a dict (bytes, FLOPs, seconds): see the module docstring. T defaults to the
    context length, tokens (D) to Chinchilla's 20 per parameter, flops to this machine's fp32 peak."""
    T = T or cfg.block_size
    if not 1 <= T <= cfg.block_size:
        raise ValueError(f"T={T} must be in [1, block_size={cfg.block_size}]")
    shapes = tensor_shapes(cfg)
    N = count(shapes)
    L, C, NH = cfg.n_layer, cfg.n_embd, cfg.n_head
    kv_per_token = 2 * L * kv_heads(cfg) * (C // NH)  # a key and a value per layer and head: numbers
    acts = count(llama_act_shapes(cfg, B, T) if is_llama(cfg) else act_shapes(cfg, B, T))
    per_token = (llama_flops_per_token if is_llama(cfg) else flops_per_token)(cfg, T, training=True)
    tokens = tokens or 20 * N
    flops = flops or peak_flops()
    report = {
        "arch": "llama" if is_llama(cfg) else "gpt2",
        "config": asdict(cfg),
        "params": N,
        "tensors": {name: {"shape": list(s), "params": math.prod(s)} for name, s in shapes.items()},
        "weights_bytes": {"fp32": 4 * N, "bf16": 2 * N, "int8": N},
        "kv_cache_bytes_per_token": {"fp32": 4 * kv_per_token, "bf16": 2 * kv_per_token},
        "kv_cache_bytes_full_context": {"fp32": 4 * kv_per_token * cfg.block_size,
                                        "bf16": 2 * kv_per_token * cfg.block_size},
        # fp32 throughout, as minigpt trains: the backward keeps a buffer like the activations' for
        # their gradients (model.grad_acts)
        "train_bytes": {"B": B, "T": T, "weights": 4 * N, "gradients": 4 * N, "adamw_m_v": 8 * N,
                        "activations": 4 * acts, "activation_grads": 4 * acts,
                        "total": 16 * N + 8 * acts},
        "flops_per_token": {"train": per_token, "train_6N": 6 * N,
                            "forward": per_token // 3},
        "train_time": {"tokens": tokens, "flops_per_second": flops, "mfu": mfu,
                       "total_flops": per_token * tokens,
                       "seconds": per_token * tokens / (flops * mfu)},
    }
    if not is_llama(cfg) and cfg.padded_vocab_size != cfg.vocab_size:
        unpadded = GPTConfig(**{**asdict(cfg), "padded_vocab_size": cfg.vocab_size})
        report["params_unpadded_vocab"] = count(param_shapes(unpadded))
    return report


def human(x, unit="B"):
    """1234567 -> '1.23 MB' (decimal prefixes, as model sizes are quoted: 7B x 2 bytes = 14 GB)."""
    for prefix in ("", "K", "M", "G", "T", "P", "E"):
        if abs(x) < 1000 or prefix == "E":
            return f"{x:.3g} {prefix}{unit}" if prefix else f"{x:,.0f} {unit}"
        x /= 1000


def duration(s):
    for unit, n in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{s / n:.3g} {unit}"
    return f"{s:.3g} seconds"


def format_report(r):
    c = r["config"]
    lines = [f"{r['arch']}: L={c['n_layer']} NH={c['n_head']} C={c['n_embd']} maxT={c['block_size']} "
             f"V={c['vocab_size']}" + (f" KV heads={c['n_kv_head']} H={c['ffn_hidden']}" if r["arch"] == "llama"
                                       else f" Vp={c['padded_vocab_size']}"),
             "", f"{'tensor':<16}{'shape':>24}{'parameters':>16}"]
    for name, t in r["tensors"].items():
        lines.append(f"{name:<16}{' x '.join(map(str, t['shape'])):>24}{t['params']:>16,}")
    lines.append(f"{'total':<16}{'':>24}{r['params']:>16,}")
    if "params_unpadded_vocab" in r:
        lines.append(f"{'  (vocab V, not padded)':<40}{r['params_unpadded_vocab']:>16,}")
    w, kv, kvf, tr = r["weights_bytes"], r["kv_cache_bytes_per_token"], r["kv_cache_bytes_full_context"], r["train_bytes"]
    f, t = r["flops_per_token"], r["train_time"]
    lines += ["", "to run",
              f"  weights            fp32 {human(w['fp32'])}   bf16 {human(w['bf16'])}   int8 {human(w['int8'])}",
              f"  KV cache / token   fp32 {human(kv['fp32'])}   bf16 {human(kv['bf16'])}",
              f"  KV cache at {c['block_size']} tokens: fp32 {human(kvf['fp32'])}   bf16 {human(kvf['bf16'])} (per sequence)",
              "", f"to train (fp32, AdamW, batch {tr['B']} x {tr['T']})"]
    for key in ("weights", "gradients", "adamw_m_v", "activations", "activation_grads", "total"):
        lines.append(f"  {key.replace('_', ' '):<18} {human(tr[key]):>12}")
    lines += ["", f"FLOPs per token: {human(f['train'], 'FLOP')} training (6N alone: {human(f['train_6N'], 'FLOP')}), "
                  f"{human(f['forward'], 'FLOP')} forward",
              f"{human(t['tokens'], 'tokens')}: {human(t['total_flops'], 'FLOP')}, at {human(t['flops_per_second'], 'FLOP/s')} "
              f"and MFU {t['mfu']:.0%}: {duration(t['seconds'])}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# the subcommand

SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def parse_amount(text):
    """'7B' -> 7e9, '124M' -> 1.24e8, '989e12' -> 9.89e14, '1.5T' -> 1.5e12."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([KMBGTP]?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a number like 7B, 124M, 300e9 or 989T, found {text!r}")
    return float(m.group(1)) * SUFFIX[m.group(2).upper()]


def checkpoint_config(path):
    """The shape in an llm.c checkpoint's header, without reading its weights."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    h = read_header(path, CHECKPOINT_MAGIC, {CHECKPOINT_VERSION_FP32, CHECKPOINT_VERSION_BF16}, "model checkpoint")
    maxT, V, L, NH, C, Vp = (int(x) for x in h[2:8])
    return GPTConfig(block_size=maxT, vocab_size=V, n_layer=L, n_head=NH, n_embd=C, padded_vocab_size=Vp)


@dataclass
class SizeSettings:
    params: str = None       # about this many parameters (7B, 350M): a plausible shape of --arch
    arch: str = "gpt2"       # gpt2 | llama: the family --params picks its shape from
    config: str = None       # a `minigpt train` settings file: its model preset and sizes
    checkpoint: str = None   # an llm.c checkpoint: the shape in its header (the weights are not read)
    n_layer: int = None      # layers (default: the preset's)
    n_head: int = None       # attention heads (default: the preset's)
    n_embd: int = None       # channels (default: the preset's)
    block_size: int = None   # context length (default: the preset's)
    vocab_size: int = None   # vocabulary (default: the preset's; GPT-2 pads it to a multiple of 128)
    n_kv_head: int = None    # Llama only: key/value heads, fewer than the query heads for GQA
    ffn_hidden: int = None   # Llama only: the SwiGLU width (default: Llama's rule, about 8C/3)
    batch_size: int = 4      # B of the training batch whose activations are counted
    seq_len: int = None      # T of that batch (default: block_size)
    tokens: str = None       # D, tokens to train on, e.g. 300B (default: 20 per parameter, Chinchilla)
    flops: str = None        # the machine's FLOP/s, e.g. 989T (default: this CPU's fp32 peak)
    mfu: float = 0.4         # model FLOPs utilisation assumed for the training time
    json: bool = False       # print one JSON object instead of the table

    CHOICES = {"arch": ("gpt2", "llama")}

    def __post_init__(self):
        settings.check_choice(self, "arch")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "n_kv_head", "ffn_hidden",
                     "batch_size", "seq_len"):
            settings.check_range(self, name, 1)
        settings.check_range(self, "mfu", 0, 1, lo_open=True)


def config_from(preset, s):
    """The shape: a checkpoint's, --params', a train settings file's or a preset's, then the sizes given."""
    if s.checkpoint:
        cfg = checkpoint_config(s.checkpoint)
    elif s.params:
        cfg = shape_for_params(parse_amount(s.params), s.arch)
    elif s.config:
        values = settings.read_config(s.config, *TRAIN_CLASSES)
        t = settings.build(TrainSettings, values)
        cfg = model_config(t, t.vocab_size or 50257)
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    elif preset in TRAIN_PRESETS:
        cfg = GPTConfig(vocab_size=50257, **TRAIN_PRESETS[preset])
    else:
        raise ValueError(f"unknown preset {preset!r}: expected one of {list(PRESETS) + list(TRAIN_PRESETS)}")
    sizes = {k: getattr(s, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
             if getattr(s, k) is not None}
    if is_llama(cfg):
        sizes.update({k: getattr(s, k) for k in ("n_kv_head", "ffn_hidden") if getattr(s, k) is not None})
        return LlamaConfig(**{**asdict(cfg), **sizes}) if sizes else cfg
    if s.n_kv_head is not None or s.ffn_hidden is not None:
        raise ValueError("--n-kv-head and --ffn-hidden shape Llama models; GPT-2 has n_head heads and 4C")
    if sizes:  # a new vocabulary needs a new padding
        cfg = GPTConfig(**{**asdict(cfg), "padded_vocab_size": None, **sizes})
    return cfg


def add_arguments(p):
    p.add_argument("preset", nargs="?", default="gpt2-124M",
                   help=f"one of {', '.join(PRESETS)}, or minigpt's tiny/small/124M/350M (default gpt2-124M)")
    settings.add_arguments(p, SizeSettings)


def run(args):
    s = settings.build(SizeSettings, settings.from_args(args, SizeSettings))
    cfg = config_from(args.preset, s)
    tokens = parse_amount(s.tokens) if s.tokens else None
    flops = parse_amount(s.flops) if s.flops else None
    r = size_report(cfg, s.batch_size, s.seq_len, tokens, flops, s.mfu)
    sys.stdout.write((json.dumps(r) if s.json else format_report(r)) + "\n")
    return 0
