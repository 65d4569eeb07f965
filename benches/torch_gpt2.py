"""GPT-2 in PyTorch built from minigpt's llm.c-layout parameters: the peer the benches run against.

The same maths as minigpt/model/gpt.py (tanh GELU, tied embeddings, LayerNorm eps 1e-5), written the
way a PyTorch user would (F.scaled_dot_product_attention, nn.Parameter, autograd), so a speed ratio
compares two implementations of one model.
"""
import torch
import torch.nn.functional as F


class TorchGPT2(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        cfg = model.config
        self.L, self.NH, self.C, self.V = cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size
        self.p = torch.nn.ParameterDict({name: torch.nn.Parameter(torch.tensor(a.astype("float32")))
                                         for name, a in model.params.items()})

    def forward(self, idx, targets=None):
        p, C, NH = self.p, self.C, self.NH
        B, T = idx.shape
        x = p["wte"][idx] + p["wpe"][:T]
        for l in range(self.L):
            h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], eps=1e-5)
            q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2)
                       for t in F.linear(h, p["qkvw"][l], p["qkvb"][l]).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, p["attprojw"][l], p["attprojb"][l])
            h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], eps=1e-5)
            h = F.gelu(F.linear(h, p["fcw"][l], p["fcb"][l]), approximate="tanh")
            x = x + F.linear(h, p["fcprojw"][l], p["fcprojb"][l])
        x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], eps=1e-5)
        logits = F.linear(x, p["wte"])[..., :self.V]
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, self.V), targets.reshape(-1), ignore_index=-1)
