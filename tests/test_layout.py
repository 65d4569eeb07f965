"""The package's shape: imports run one way, from the file formats at the bottom up to the commands.

Every module belongs to a layer; a module may import its own layer and the ones below it, never one
above. Function-level imports count the same as top-level ones (none may dodge a circle). Within
a layer there must be no circle either.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "minigpt")

# bottom to top; a module's layer is the first entry that is a prefix of its dotted name
LAYERS = [
    ["minigpt.config", "minigpt.fileio", "minigpt.settings", "minigpt.plot",
     "minigpt.quant", "minigpt.gguf", "minigpt.gguf_dump", "minigpt.pull"],  # formats (llm.c's, GGUF), shapes, settings, pictures
    ["minigpt.tokenizer"],   # byte-level BPE, special tokens, the chat template
    ["minigpt.data"],        # web pages -> documents -> token shards
    ["minigpt.model"],       # the ops and the GPT
    ["minigpt.inference"],   # KV cache, sampling, generation
    ["minigpt.pretrain"],    # corpus, shards, the training loop
    ["minigpt.posttrain"],   # conversations, SFT, tools, RL, RLHF
    ["minigpt.eval"],        # evaluation and model sizes
    ["minigpt.chat"],        # terminal chat, server
    ["minigpt.cli", "minigpt.__main__", "minigpt.speedrun"],  # the command, and speedrun, which runs the others
]


def modules():
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports(name, path, known):
    """The minigpt modules that `name` imports (absolute and relative, at any depth in the file)."""
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minigpt")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("minigpt"):
                continue
            for a in node.names:  # `from . import x` imports the module x when there is one
                found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module)
    return {m for m in found if m in known and m != name}


def layer_of(name):
    if name == "minigpt":
        return -1  # the package's front door sets OMP_WAIT_POLICY and imports nothing of its own
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    if name.startswith("minigpt._"):
        return 0  # compiled modules (cffi): below everything that wraps them
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layout.py")


def test_every_import_points_down():
    known = modules()
    upward = []
    for name, path in sorted(known.items()):
        for target in imports(name, path, known):
            if not name.startswith(target + ".") and layer_of(target) > layer_of(name):
                upward.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_import_circles():
    known = modules()
    graph = {n: {t for t in imports(n, p, known) if not n.startswith(t + ".")} for n, p in known.items()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for t in sorted(graph[n]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_layer_test_can_fail(tmp_path):
    # a module of the model layer that imports the training loop would be caught
    fake = tmp_path / "gpt.py"
    fake.write_text("from ..pretrain import train\n")
    known = {"minigpt.model.gpt": str(fake), "minigpt.pretrain.train": "", "minigpt.pretrain": ""}
    (target,) = imports("minigpt.model.gpt", str(fake), known)
    assert layer_of(target) > layer_of("minigpt.model.gpt")
