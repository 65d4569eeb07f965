"""Build one cffi module into minigpt/ by hand: `python csrc/build_NAME.py` calls build_inplace.

`pip install -e .` does the same for every csrc/build_*.py at once. This is for a quick rebuild after
editing C, and for .ci/sanitize (MINIGPT_SANITIZE=1). The module gets the name pip gives it (cffi
builds for the stable ABI: minigpt/_NAME.abi3.so), and any other build of it is removed, so whichever
route built last is the module Python imports, never a stale one beside it.
"""
import glob
import importlib.machinery
import os
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_inplace(ffibuilder, name):
    """Compile ffibuilder (module minigpt.NAME) in a scratch folder; install only its .so."""
    with tempfile.TemporaryDirectory() as tmp:
        so = ffibuilder.compile(tmpdir=tmp, verbose=False)
        abi3 = ".abi3.so" in importlib.machinery.EXTENSION_SUFFIXES
        target = os.path.join(ROOT, "minigpt", f"{name}.abi3.so" if abi3 else os.path.basename(so))
        shutil.copy(so, target + ".tmp")
        os.replace(target + ".tmp", target)  # atomic: a running process never sees half a library
    for other in glob.glob(os.path.join(ROOT, "minigpt", f"{name}.*so")):
        if other != target:
            os.remove(other)
    return target
