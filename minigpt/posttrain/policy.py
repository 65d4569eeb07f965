"""The policy gradient as per-token loss weights: RL through the same backward as pretraining.

A sampled reply is a sequence of tokens y_t with log-probabilities lp_t = log pi(y_t | before) under
the model being trained. The objective over a batch of replies, token-level normalised (every
trained token of the batch weighs 1/N, so long replies count by their length, as in nanochat and
DAPO), is

    J = (1/N) sum_t  [ -min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)  +  beta k3_t ]

    A_t   the advantage of the reply the token belongs to: reward - group mean (/ group std: GRPO)
    r_t   exp(lp_t - old_t): the ratio to the policy that sampled (1 on the first update of a batch)
    k3_t  exp(ref_t - lp_t) - (ref_t - lp_t) - 1: Schulman's k3 estimate of KL(pi || ref), >= 0

J depends on the weights only through each lp_t, and lp_t = -CE_t (the cross-entropy the model's
forward computes with the sampled token as target). So dJ = sum_t (dJ/dlp_t) dlp_t
= sum_t (-dJ/dlp_t) dCE_t: the policy gradient is the cross-entropy gradient with per-token weights

    w_t = (1/N) [ r_t A_t [unclipped]  +  beta (exp(ref_t - lp_t) - 1) ]

and model.forward(x, y) then model.reweight(w) then model.backward() puts it into model.grads. A
token is clipped (no gradient from the surrogate) when min() picks the constant clipped branch:
A > 0 and r > 1 + eps, or A < 0 and r < 1 - eps. With one update per batch (r = 1) and beta = 0 this
is REINFORCE with a group-mean baseline: w_t = A_t / N.
"""
import math

import numpy as np


def group_advantages(rewards, normalize_std=False, eps=1e-6):
    """rewards (P, G): G replies to each of P problems -> advantages (P, G): reward minus its
    group's mean, divided by the group's std with normalize_std (GRPO). A group whose rewards are
    all equal gets 0: nothing to learn from it."""
    r = np.asarray(rewards, np.float64)                  # (P, G)
    a = r - r.mean(axis=1, keepdims=True)                # (P, G)
    if normalize_std:
        a = a / (r.std(axis=1, keepdims=True) + eps)     # (P, G)
    return a


def token_logprobs(model, x, y):
    """lp (B, T) float64: log-probability of each target y under the model (0 where y = -1), from
    the model's own forward (-CE per token). Leaves the model ready for reweight() + backward()."""
    model.forward(x, y)
    return np.where(np.asarray(y) >= 0, -model.acts["losses"].astype(np.float64), 0.0)  # (B, T)


def k3(lp, ref):
    """Schulman's k3 estimator of KL(pi || ref) per token: unbiased, always >= 0."""
    d = ref - lp
    return np.exp(d) - d - 1.0


def clipped_mask(ratio, adv, clip_eps):
    """1 where the surrogate's min() takes the unclipped term r A (the token gets a gradient)."""
    if clip_eps is None:
        return np.ones_like(ratio)
    return ~(((adv > 0) & (ratio > 1 + clip_eps)) | ((adv < 0) & (ratio < 1 - clip_eps)))


def pg_objective(lp, adv, mask, n_tokens, old=None, ref=None, clip_eps=None, kl_coef=0.0):
    """J (a float) and its parts: the clipped surrogate, the mean k3, the share of clipped tokens.
    lp, old, ref, adv, mask: (B, T); old defaults to lp (r = 1), ref is needed when kl_coef > 0."""
    mask = np.asarray(mask, np.float64)
    ratio = np.exp(lp - (lp if old is None else old))                 # (B, T)
    surr = ratio * adv                                                # (B, T)
    if clip_eps is not None:
        surr = np.minimum(surr, np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    kl = k3(lp, ref) if kl_coef else np.zeros_like(lp)                # (B, T)
    J = float(((-surr + kl_coef * kl) * mask).sum() / n_tokens)
    clipped = 1.0 - clipped_mask(ratio, adv, clip_eps)
    return J, {"surrogate": float((surr * mask).sum() / n_tokens), "kl": float((kl * mask).sum() / n_tokens),
               "clipped": float((clipped * mask).sum() / max(mask.sum(), 1))}


def pg_weights(lp, adv, mask, n_tokens, old=None, ref=None, clip_eps=None, kl_coef=0.0):
    """w (B, T) float64: -dJ/dlp_t, the per-token loss weights whose cross-entropy gradient is dJ
    (module docstring). Pass them to model.reweight after multiplying by the micro-batch's
    count of trained tokens (the model divides by it): see weights_for_model."""
    mask = np.asarray(mask, np.float64)
    ratio = np.exp(lp - (lp if old is None else old))                 # (B, T)
    w = ratio * adv * clipped_mask(ratio, adv, clip_eps)              # (B, T)
    if kl_coef:
        w = w + kl_coef * (np.exp(ref - lp) - 1.0)                    # -d(beta k3)/dlp
    return w * mask / n_tokens


def weights_for_model(w, y):
    """The model's loss divides by its micro-batch's count of targets; undo that, so micro-batches
    accumulate to the gradient of J over the whole batch."""
    return w * int((np.asarray(y) >= 0).sum())


def pass_at_k(n, c, k):
    """The unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k), the chance that k samples drawn without replacement include a right one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, found n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
