"""Pictures a person would rather look at than read: a run's loss curve (train loss per step and
val loss at each evaluation, from its log.jsonl), and a model's attention patterns on a text."""
import json
import os

import numpy as np

from .fileio import atomic_write


def pyplot():
    """matplotlib's pyplot drawing to files (no display needed), or None if it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig, png_path):
    """Write the figure via a temp file and a rename: a reader never sees half a PNG."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(png_path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return png_path


def read_log(path):
    """(train steps, train losses, val steps, val losses) from a log.jsonl."""
    ts, tl, vs, vl = [], [], [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "loss" in r:
                ts.append(r["step"])
                tl.append(r["loss"])
            if "val_loss" in r:
                vs.append(r["step"])
                vl.append(r["val_loss"])
    return ts, tl, vs, vl


def plot_log(log_path, png_path):
    """Write the PNG and return its path; None (with a note) if matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        print("loss curve skipped: matplotlib is not installed (pip install 'minigpt[plot]')")
        return None
    ts, tl, vs, vl = read_log(log_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ts, tl, lw=0.8, alpha=0.7, label="train")
    ax.plot(vs, vl, "o-", ms=3, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(log_path))))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, png_path)


def attention_patterns(model, ids, layer):
    """Run the model on one sequence; its attention weights in `layer`: (NH, T, T), row t = how much
    position t draws from each position t2 <= t (the rows sum to 1, the future is 0)."""
    model.forward(np.asarray([ids]))
    return model.acts["att"][layer, 0].copy()   # acts["att"] is (L, B, NH, T, T)


def plot_attention(model, ids, png_path, labels=None, layer=-1):
    """Every head of one layer as a heatmap: rows are the positions attending, columns the positions
    attended to. Returns (the PNG's path or None without matplotlib, the (NH, T, T) weights)."""
    L = model.config.n_layer
    layer = layer % L
    att = attention_patterns(model, ids, layer)          # (NH, T, T)
    plt = pyplot()
    if plt is None:
        print("attention map skipped: matplotlib is not installed (pip install 'minigpt[plot]')")
        return None, att
    NH, T = att.shape[0], att.shape[1]
    cols = min(NH, 4)
    rows = (NH + cols - 1) // cols
    size = 3.2 if T <= 24 else 4.5
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= NH:
            ax.axis("off")
            continue
        ax.imshow(att[h], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"layer {layer} head {h}", fontsize=9)
        if labels is not None and T <= 48:  # token labels only where they can be read
            ax.set_xticks(range(T), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(T), labels, fontsize=6)
        else:
            ax.set_xlabel("attended position", fontsize=8)
            ax.set_ylabel("attending position", fontsize=8)
    fig.tight_layout()
    return save(fig, png_path), att
