"""`minigpt speedrun`: the whole recipe in one command, then a report card.

    prepare (tokenizer + shards) -> base (pretraining) -> sft (chat model) -> rl (pass@1 up) -> ...

Every stage is an ordinary `minigpt` subcommand run in-process (minigpt.cli.main, stdout captured
to DIR/logs/<stage>.log and echoed); it writes its run directory DIR/<stage>/, which `minigpt chat`,
`serve` and `eval` accept as is. After each model stage `minigpt eval` scores it the same way
(validation loss and bits per byte on the prepared val shards, the built-in multiple choice), so
the stages compare side by side. A stage is finished when its marker DIR/<stage>/speedrun.json
(its metrics, written last) exists: a rerun skips it; a stage cut short is started again.
Then DIR/report.md (metrics table, plots, sample conversations) and DIR/report.json.

A stage whose command or data is not there yet is listed as skipped: adding one is one line in STAGES.
"""
import contextlib
import dataclasses
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass

from . import settings
from .cli import SUBCOMMANDS, main
from .config import PRESETS
from .fileio import resolve_model, write_json
from .model.gpt import GPT
from .plot import plot_attention
from .tokenizer.chat import render_prompt
from .tokenizer.tokenizer import load_tokenizer


@dataclass
class SpeedrunSettings:
    out: str = "runs/speedrun"   # run directory: one subdirectory per stage, logs/, report.md, report.json
    preset: str = "tiny"         # size preset of the base model (minigpt/config.py)
    quick: bool = False          # a few steps per stage (a few minutes on 2 cores, run in CI) instead of the full sizes
    threads: int = None          # threads for the C kernels (default: OMP_NUM_THREADS, else every core)

    CHOICES = {"preset": tuple(PRESETS)}

    def __post_init__(self):
        settings.check_choice(self, "preset")
        settings.check_range(self, "threads", 1, 4096)


@dataclass
class Sizes:
    """How much work each stage does. FULL is the default run, QUICK the --quick one."""
    vocab_size: int = 1024       # BPE vocabulary trained on the built-in corpus
    batch_size: int = 16         # sequences per step, pretraining and SFT
    pretrain_steps: int = 1200   # pretraining steps (tiny, batch 16: 0.3-0.8 s a step on 2 busy cores)
    sft_steps: int = 500         # SFT steps on the built-in conversations (0.4-1.1 s a step)
    graded: int = 200            # held-out SFT prompts answered greedily and graded at the end of SFT
    rl_task: str = "count"       # built-in RL task (minigpt/posttrain/tasks.py)
    rl_steps: int = 60           # RL steps (rollouts + update: 1-2 s a step)
    rl_problems: int = 8         # problems per RL step
    rl_group: int = 8            # samples per problem
    rl_eval_problems: int = 100  # test problems for pass@1 / pass@k before and after RL
    rl_eval_samples: int = 8     # samples per test problem (k of pass@k)
    eval_examples: int = 200     # built-in multiple-choice examples per evaluation
    eval_tokens: int = 50000     # validation tokens scored for loss and bits per byte
    reply_tokens: int = 48       # longest reply: graded SFT answers, RL rollouts, sample conversations
    seed: int = 1337             # seed of every stage (a fixed recipe: rerun it, get the same report)


FULL = Sizes()
QUICK = Sizes(vocab_size=512, batch_size=8, pretrain_steps=30, sft_steps=20, graded=8, rl_steps=2,
              rl_problems=2, rl_group=4, rl_eval_problems=4, rl_eval_samples=2, eval_examples=16,
              eval_tokens=2000, reply_tokens=16)

SAMPLE_PROMPTS = ["Who are you?", "How many r's are in strawberry?", "Which is bigger, 9.11 or 9.9?",
                  "What is 7 + 5?"]


# ------------------------------------------------------------------------------------------------
# the stages: (name, subcommand, its arguments, the run it starts from)


def prepare_args(s, z, d):
    return ["--out", d["prepare"], "--vocab-size", str(z.vocab_size), "--seed", str(z.seed)]


def base_args(s, z, d):
    return ["--data", d["prepare"], "--out", d["base"], "--model", s.preset, "--steps", str(z.pretrain_steps),
            "--batch-size", str(z.batch_size), "--eval-every", str(max(1, z.pretrain_steps // 10)),
            "--warmup", str(min(30, z.pretrain_steps // 10)), "--seed", str(z.seed)]


def sft_args(s, z, d):
    return ["--base", d["base"], "--out", d["sft"], "--steps", str(z.sft_steps), "--batch-size", str(z.batch_size),
            "--eval-every", str(max(1, z.sft_steps // 5)), "--warmup", str(min(20, z.sft_steps // 10)),
            "--graded", str(z.graded), "--graded-every", "0", "--reply-tokens", str(z.reply_tokens),
            "--seed", str(z.seed)]


def rl_args(s, z, d):
    return ["--base", d["sft"], "--out", d["rl"], "--task", z.rl_task, "--steps", str(z.rl_steps),
            "--problems", str(z.rl_problems), "--group", str(z.rl_group), "--max-new-tokens", str(z.reply_tokens),
            "--eval-every", str(z.rl_steps), "--eval-problems", str(z.rl_eval_problems),
            "--eval-samples", str(z.rl_eval_samples), "--seed", str(z.seed)]


# in order; `model`: the stage leaves a model to evaluate; `chat`: a chat model (samples, attention map).
# reward / dpo / probe join here once their built-in data lands (one line each).
STAGES = [
    dict(name="prepare", command="prepare", args=prepare_args, model=False, chat=False),
    dict(name="base", command="train", args=base_args, model=True, chat=False),
    dict(name="sft", command="sft", args=sft_args, model=True, chat=True),
    dict(name="rl", command="rl", args=rl_args, model=True, chat=True),
]
# stages of the recipe not run yet, and why; the report lists them
NOT_YET = {"reward + dpo (RLHF)": "no built-in preference pairs yet (`minigpt reward` / `dpo` need --data)",
           "tools + refusals": "not in the recipe yet: `minigpt probe` (tools branch) would add two stages, "
                               "probe -> SFT on its refusals.jsonl"}
MARKER = "speedrun.json"


class Tee:
    """A text stream that writes to several (the terminal and a stage's log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for f in self.streams:
            f.write(text)
        return len(text)

    def flush(self):
        for f in self.streams:
            f.flush()


def run_command(argv, log_path, echo=True):
    """minigpt.cli.main(argv) in this process -> (exit code, its stdout as text); stdout also
    appended to log_path (and echoed to the terminal)."""
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ minigpt " + " ".join(argv) + "\n")
        kept = io.StringIO()
        with contextlib.redirect_stdout(Tee(log, kept, *((sys.stdout,) if echo else ()))):
            rc = main(argv)
    return rc, kept.getvalue()


def last_json(text):
    """The last line of a command's output that is a JSON object (its summary), or None."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate_stage(s, z, d, stage, log_path):
    """`minigpt eval` of the stage's run directory: val loss, bpb, built-in multiple choice."""
    shards = os.path.join(d["prepare"], "*_val_*.bin")  # prepare names them <name>_val_NNNNNN.bin
    argv = ["eval", d[stage], "--shards", shards, "--choice", "builtin", "--max-tokens", str(z.eval_tokens),
            "--max-examples", str(z.eval_examples), "--json"]
    if s.threads:
        argv += ["--threads", str(s.threads)]
    rc, out = run_command(argv, log_path, echo=False)
    if rc != 0:
        raise RuntimeError(f"evaluating stage {stage} failed (exit {rc}): see {log_path}")
    r = json.loads(out[out.index("{"):])
    loss = r["loss"][shards]
    mc = r["choice"]["builtin"]
    metrics = {"val_loss": loss["loss"], "val_bpb": loss["bpb"], "mc_acc_norm": mc["acc_norm"]}
    metrics.update({f"mc_{task}": acc for task, acc in mc.get("tasks", {}).items()})
    return metrics, r


def stage_metrics(stage, d, summary):
    """What a stage reports beyond the common evaluation."""
    if stage == "prepare":
        with open(os.path.join(d["prepare"], "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        return {"tokens": meta["tokens"], "vocab_size": meta["vocab_size"]}
    if stage == "base":
        log = read_jsonl(os.path.join(d["base"], "log.jsonl"))
        return {"train_loss": next(r["loss"] for r in reversed(log) if "loss" in r)}
    if stage == "sft":
        out = {"sft_val_loss": summary["val_loss"]}
        for task, g in (summary.get("graded") or {}).items():
            if g["accuracy"] is not None:
                out[f"graded_{task}"] = g["accuracy"]
        return out
    if stage == "rl":
        return {k: summary[k] for k in ("pass1_before", "pass1_after", "passk_before", "passk_after") if k in summary}
    return {}


def run_stage(s, z, d, stage):
    """One stage to its marker; returns the marker's contents."""
    name = stage["name"]
    marker = os.path.join(d[name], MARKER)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            try:
                done = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{marker}: damaged ({e}): delete it to run stage {name} again") from None
        print(f"speedrun: {name} finished before ({done['seconds']:.0f} s), skipped")
        return done
    if os.path.exists(d[name]):  # cut short last time: start it again from nothing
        shutil.rmtree(d[name])
    log_path = os.path.join(d["logs"], name + ".log")
    argv = [stage["command"]] + stage["args"](s, z, d)
    if s.threads and stage["model"]:
        argv += ["--threads", str(s.threads)]
    print(f"speedrun: {name}: minigpt {' '.join(argv)}")
    t0 = time.time()
    rc, out = run_command(argv, log_path)
    if rc != 0:
        raise RuntimeError(f"stage {name} failed (exit {rc}): see {log_path}")
    summary = last_json(out)
    metrics = stage_metrics(name, d, summary)
    if stage["model"]:
        common, _ = evaluate_stage(s, z, d, name, log_path)
        metrics = {**common, **metrics}
    done = {"stage": name, "command": "minigpt " + " ".join(argv), "seconds": time.time() - t0,
            "metrics": metrics, "summary": summary}
    write_json(marker, done)  # last: its presence means the stage is finished
    return done


# ------------------------------------------------------------------------------------------------
# the report card


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def metrics_table(done):
    """Markdown: one row per metric, one column per stage (nanochat's BASE / SFT / RL table)."""
    names = list(done)
    rows = list(dict.fromkeys(k for st in done.values() for k in st["metrics"]))
    lines = ["| metric | " + " | ".join(names) + " |", "|" + " --- |" * (1 + len(names))]
    for k in rows:
        lines.append(f"| {k} | " + " | ".join(fmt(done[n]["metrics"].get(k)) for n in names) + " |")
    lines.append("| time (s) | " + " | ".join(f"{done[n]['seconds']:.0f}" for n in names) + " |")
    return "\n".join(lines)


def sample_conversations(s, z, run_dir, log_path):
    """Greedy replies of a chat model to SAMPLE_PROMPTS, through `minigpt chat -p`."""
    out = []
    for prompt in SAMPLE_PROMPTS:
        argv = ["chat", run_dir, "-p", prompt, "--temperature", "0", "--max-new-tokens", str(z.reply_tokens)]
        rc, reply = run_command(argv, log_path, echo=False)
        if rc != 0:
            raise RuntimeError(f"chat with {run_dir} failed (exit {rc}): see {log_path}")
        out.append({"prompt": prompt, "reply": reply.strip()})
    return out


def attention_map(s, run_dir, png_path):
    """plot_attention of the model's last layer over the first sample prompt; the PNG or None."""
    ckpt, tok_path = resolve_model(run_dir)
    model = GPT.load(ckpt, threads=s.threads)
    tok = load_tokenizer(tok_path)
    ids = render_prompt(tok, [{"role": "user", "content": SAMPLE_PROMPTS[0]}])[-48:]
    labels = [tok.decode([i]) for i in ids]
    png, _ = plot_attention(model, ids, png_path, labels=labels)
    return png


def write_report(s, z, d, done, skipped, samples, attention, total_s):
    out = s.out
    rel = lambda p: os.path.relpath(p, out)
    plots = [(f"{n} loss", os.path.join(d[n], "loss.png")) for n in done] + \
            [(f"{n} reward, pass@k, reply length", os.path.join(d[n], "rl.png")) for n in done]
    plots = [(title, p) for title, p in plots if os.path.exists(p)]
    if attention:
        plots.append((f"attention of the final chat model ({samples['stage']}), last layer", attention))
    md = ["# minigpt speedrun: report card", "",
          f"{'--quick' if s.quick else 'full'} run, preset {s.preset}, {total_s / 60:.1f} minutes in all "
          f"(this invocation; stages run before were skipped). Every stage's run directory is `{out}/<stage>/`: "
          "`minigpt chat`, `serve` and `eval` take it as is.", "",
          "## Settings", "", "```json", json.dumps({**dataclasses.asdict(s), "sizes": dataclasses.asdict(z)}, indent=1),
          "```", "",
          "## Metrics", "",
          "val_loss / val_bpb: the prepared validation shards (same tokens for every stage); mc_*: the built-in "
          "multiple choice (acc_norm, llm.c's HellaSwag scoring); graded_*: SFT's held-out prompts answered "
          "greedily and graded; pass1/passk: RL's test problems before and after RL.", "",
          metrics_table(done), "",
          "## Stages", ""]
    md += [f"- **{n}**: `{st['command']}`" for n, st in done.items()]
    md += [f"- **{n}**: skipped ({why})" for n, why in skipped.items()]
    md += ["", "## Plots", ""]
    md += [f"### {title}\n\n![{title}]({rel(p)})\n" for title, p in plots] or \
          ["(no plots: matplotlib is not installed)"]
    md += ["", "## Sample conversations", ""]
    if samples:
        md += [f"Greedy replies of the final chat model ({samples['stage']}).", ""]
        for c in samples["conversations"]:
            md += [f"> **user:** {c['prompt']}", ">", "> **assistant:** " + c["reply"].replace("\n", "\n> "), ""]
    else:
        md += ["(no chat model: no stage after pretraining finished)"]
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    write_json(os.path.join(out, "report.json"), {
        "settings": dataclasses.asdict(s), "sizes": dataclasses.asdict(z), "seconds": total_s,
        "stages": {n: {"metrics": st["metrics"], "seconds": st["seconds"], "command": st["command"]}
                   for n, st in done.items()},
        "skipped": skipped, "samples": samples, "plots": {title: rel(p) for title, p in plots}})


# ------------------------------------------------------------------------------------------------
# the command


def add_arguments(p):
    settings.add_arguments(p, SpeedrunSettings)


def run(args):
    s = settings.build(SpeedrunSettings, settings.from_args(args, SpeedrunSettings))
    z = QUICK if s.quick else FULL
    t0 = time.time()
    d = {st["name"]: os.path.join(s.out, st["name"]) for st in STAGES}
    d["logs"] = os.path.join(s.out, "logs")
    os.makedirs(d["logs"], exist_ok=True)
    # a rerun must continue the same recipe, not mix two sizes in one report
    chosen = {**dataclasses.asdict(s), "sizes": dataclasses.asdict(z)}
    chosen.pop("threads")
    path = os.path.join(s.out, "speedrun_settings.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        if before != chosen:
            raise ValueError(f"{s.out} holds a speedrun with other settings ({path}): give another --out")
    else:
        theirs = [d[st["name"]] for st in STAGES if os.path.exists(d[st["name"]])]
        if theirs:  # never delete a directory that a speedrun did not make
            raise ValueError(f"{theirs[0]} exists but {s.out} is not a speedrun's directory: give another --out")
        write_json(path, chosen)
    done, skipped = {}, dict(NOT_YET)
    for stage in STAGES:
        if stage["command"] not in SUBCOMMANDS:
            skipped[stage["name"]] = f"no `minigpt {stage['command']}` in this version"
            continue
        done[stage["name"]] = run_stage(s, z, d, stage)
    chat_stages = [st["name"] for st in STAGES if st["chat"] and st["name"] in done]
    samples, attention = None, None
    if chat_stages:
        final = chat_stages[-1]
        log_path = os.path.join(d["logs"], "report.log")
        samples = {"stage": final, "conversations": sample_conversations(s, z, d[final], log_path)}
        attention = attention_map(s, d[final], os.path.join(d[final], "attention.png"))
    total = time.time() - t0
    write_report(s, z, d, done, skipped, samples, attention, total)
    print(metrics_table(done))
    print(f"speedrun: {total / 60:.1f} minutes; report card: {os.path.join(s.out, 'report.md')}")
    return 0
