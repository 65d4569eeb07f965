"""The model's shape: GPTConfig, the size presets, and where every tensor lives.

Everything above this file (the file formats, the kernels, the GPT, training, inference) agrees
on these names and shapes; they are llm.c's, so a checkpoint moves between the two unchanged.

    L layers, C channels, NH heads, V vocabulary (Vp padded), maxT = block_size
"""
import math
from dataclasses import dataclass

LN_EPS = 1e-5                            # LayerNorm's epsilon, as GPT-2
GELU_SCALE = math.sqrt(2.0 / math.pi)    # tanh-GELU: 0.5 x (1 + tanh(GELU_SCALE (x + 0.044715 x^3)))
GELU_CUBIC = 0.044715


@dataclass
class GPTConfig:
    block_size: int = 1024   # maxT: the longest sequence
    vocab_size: int = 50257  # V
    n_layer: int = 12        # L
    n_head: int = 12         # NH
    n_embd: int = 768        # C
    padded_vocab_size: int = None  # Vp: V rounded up to a multiple of 128 (fast matmuls), by default

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, found {value!r}")
        if self.padded_vocab_size is None:
            self.padded_vocab_size = (self.vocab_size + 127) // 128 * 128
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"padded_vocab_size {self.padded_vocab_size} < vocab_size {self.vocab_size}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


# size presets: (n_layer, n_head, n_embd, block_size), with what one step costs on 2 cores
# (batch 16 x block_size, C backend, AVX2/AVX-512 EPYC); `minigpt size` gives the full picture
PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128),      # 0.9M weights + vocab; ~25 s / 100 steps
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),     # 10.7M + vocab; ~15 min / 100 steps
    "124M": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),   # GPT-2 small; hours / 100 steps
    "350M": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),  # GPT-2 medium
}

PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")

# the weight matrices: AdamW's weight decay applies to these and not to biases or LayerNorm gains
MATRIX_NAMES = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")


def param_shapes(cfg):
    maxT, L, C, Vp = cfg.block_size, cfg.n_layer, cfg.n_embd, cfg.padded_vocab_size
    return {
        "wte": (Vp, C), "wpe": (maxT, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


def act_shapes(cfg, B, T):
    L, C, NH, Vp = cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.padded_vocab_size
    return {
        "encoded": (B, T, C),
        "ln1": (L, B, T, C), "ln1_mean": (L, B, T), "ln1_rstd": (L, B, T),
        "qkv": (L, B, T, 3 * C),
        "atty": (L, B, T, C),
        "preatt": (L, B, NH, T, T), "att": (L, B, NH, T, T),
        "attproj": (L, B, T, C),
        "residual2": (L, B, T, C),
        "ln2": (L, B, T, C), "ln2_mean": (L, B, T), "ln2_rstd": (L, B, T),
        "fch": (L, B, T, 4 * C), "fch_gelu": (L, B, T, 4 * C),
        "fcproj": (L, B, T, C),
        "residual3": (L, B, T, C),
        "lnf": (B, T, C), "lnf_mean": (B, T), "lnf_rstd": (B, T),
        "logits": (B, T, Vp), "probs": (B, T, Vp), "losses": (B, T),
    }


def num_parameters(cfg):
    return sum(math.prod(s) for s in param_shapes(cfg).values())


def carve(memory, shapes):
    """Views of consecutive pieces of one flat buffer, one per named shape."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = memory[offset:offset + n].reshape(shape)
        offset += n
    return views
