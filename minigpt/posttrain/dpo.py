"""DPO: learning from preference pairs directly, with no reward model (Rafailov et al. 2023).

For a prompt x with a chosen reply c and a rejected one r, and a frozen reference policy (the SFT
model), DPO's implicit reward of a reply is beta times how much more likely the policy makes it
than the reference does. The loss asks the chosen reply's implicit reward to beat the rejected's:

    z    = beta * [(log pi(c|x) - log ref(c|x)) - (log pi(r|x) - log ref(r|x))]
    loss = mean over pairs of -log sigmoid(z)
    dloss/dlog pi(c|x) = -beta sigmoid(-z) / P,   dloss/dlog pi(r|x) = +beta sigmoid(-z) / P

A reply's log-probability is minus the sum of its tokens' cross-entropy losses, so the gradient is
the pretraining gradient with per-token weights: +beta sigmoid(-z) / P on the chosen reply's tokens,
-beta sigmoid(-z) / P on the rejected reply's, 0 on the prompt. DPO is one more set of loss weights
(GPT.reweight), like SFT's masks and RL's advantages.
"""
import numpy as np

from .reward import sigmoid


def pair_rows(pairs, T):
    """Pairs of (prompt ids, chosen ids, rejected ids) -> x, y (2P, T): the P chosen rows, then the
    P rejected rows; targets are -1 on the prompt and the padding, so only reply tokens count."""
    P = len(pairs)
    x = np.zeros((2 * P, T), np.int64)
    y = np.full((2 * P, T), -1, np.int64)
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        for row, reply in ((i, chosen), (P + i, rejected)):
            seq = list(prompt) + list(reply)
            if len(seq) - 1 > T or not prompt or not reply:
                raise ValueError(f"pair {i}: prompt + reply must be 2..{T + 1} tokens with both non-empty, "
                                 f"found {len(prompt)} + {len(reply)}")
            n = len(seq) - 1
            x[row, :n] = seq[:-1]
            y[row, len(prompt) - 1:n] = seq[len(prompt):]
    return x, y


def sequence_logps(model, x, y):
    """log pi(reply | prompt) per row (2P,): minus the summed token losses over the counted targets."""
    model.forward(x, y)
    losses = model.acts["losses"].astype(np.float64)  # (2P, T)
    return -np.where(y >= 0, losses, 0.0).sum(axis=1)  # (2P,)


def dpo_loss(logp, ref_logp, beta):
    """(loss, dloss/dlogp (2P,), share of pairs whose implicit reward prefers the chosen reply, a tie
    counting half)."""
    P = logp.size // 2
    delta = logp - ref_logp                           # (2P,) log-ratio policy / reference
    z = beta * (delta[:P] - delta[P:])                # (P,)
    loss = float(np.logaddexp(0.0, -z).mean())
    g = beta * sigmoid(-z) / P                        # (P,)
    return loss, np.concatenate([-g, g]), float((z > 0).mean() + 0.5 * (z == 0).mean())


def dpo_weights(dlogp, y, n_valid):
    """Per-token weights for GPT.reweight that make backward() compute d(DPO loss)/d(params):
    d/dtheta log p = -sum of d(token loss), and reweight divides by the counted targets."""
    return np.where(y >= 0, -dlogp[:, None] * n_valid, 0.0)  # (2P, T)


def dpo_step(model, x, y, ref_logp, beta):
    """Forward, DPO loss and its gradient in model.grads (zeroed first). Returns (loss, accuracy)."""
    model.zero_grad()
    logp = sequence_logps(model, x, y)
    loss, dlogp, accuracy = dpo_loss(logp, ref_logp, beta)
    model.reweight(dpo_weights(dlogp, y, int((y >= 0).sum())))
    model.backward()
    return loss, accuracy
