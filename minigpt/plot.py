"""The loss curve of a run: train loss per step and val loss at each evaluation, from its log.jsonl."""
import json
import os


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
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
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
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=110)  # then rename: a reader never sees half a PNG
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
