"""Growing a trained model's vocabulary, for special tokens added after pretraining (the chat markers).

The only tensor that knows the vocabulary is wte (Vp, C): row i is token i's input embedding and,
tied, its output (LM head) vector. Adding tokens V .. V'-1 means new rows:

  - they go into the padded rows V .. Vp-1 while V' <= Vp (those rows are zero and never scored),
    so the checkpoint keeps its size; past Vp, wte grows to V' rounded up to a multiple of 128;
  - a new row starts as the mean of the trained rows (Hewitt 2021): as an input it looks like an
    average token, as an output its logit is the average logit, so the model neither ignores nor
    over-predicts it before fine-tuning teaches it what it means;
  - every other number is copied, so the logits of old tokens are unchanged, bit for bit.

The result is still an llm.c checkpoint (header V', Vp'), so run.c and llm.c read it.
"""
from dataclasses import replace

import numpy as np

from ..config import num_parameters, param_shapes
from .gpt import GPT


def grow_vocab(config, params, new_vocab_size):
    """(config', params'): a model with vocab_size = new_vocab_size >= config.vocab_size. params is
    the flat parameter buffer of config (llm.c order, wte first); the new rows are the mean embedding."""
    V, Vp, C = config.vocab_size, config.padded_vocab_size, config.n_embd
    if not isinstance(new_vocab_size, (int, np.integer)) or new_vocab_size < V:
        raise ValueError(f"the new vocabulary ({new_vocab_size!r}) must be an int >= the model's {V}: "
                         "tokens are added, never removed")
    params = np.asarray(params)
    if params.ndim != 1 or params.size != num_parameters(config):
        raise ValueError(f"params must be the flat buffer of {num_parameters(config):,} numbers of this "
                         f"config, found shape {params.shape}")
    new_Vp = Vp if new_vocab_size <= Vp else (new_vocab_size + 127) // 128 * 128
    new_config = replace(config, vocab_size=int(new_vocab_size), padded_vocab_size=new_Vp)
    wte = params[:Vp * C].reshape(Vp, C)                     # (Vp, C)
    new_wte = np.zeros((new_Vp, C), dtype=params.dtype)      # (Vp', C)
    new_wte[:V] = wte[:V]
    mean = wte[:V].astype(np.float64).mean(axis=0)           # (C,)
    new_wte[V:new_vocab_size] = mean.astype(params.dtype)    # the new tokens
    new_params = np.concatenate([new_wte.reshape(-1), params[Vp * C:]])
    assert new_params.size == num_parameters(new_config)
    assert param_shapes(new_config)["wte"] == (new_Vp, C)
    return new_config, new_params


def grow_model(model, new_vocab_size, backend=None, threads=None):
    """A new GPT (same backend unless given) with model's weights and the vocabulary grown."""
    config, params = grow_vocab(model.config, model.params_memory, new_vocab_size)
    grown = GPT(config, backend=backend or model.backend.name, seed=None, dtype=model.dtype, threads=threads)
    grown.params_memory[:] = params
    return grown
