"""Builds the optional CUDA backend: nvcc compiles csrc/cuda/*.cu, cffi wraps them as minigpt._cuda.

    MINIGPT_CUDA=1 pip install -e .          # setup.py picks up `ffibuilder` below
    python csrc/cuda/build_cuda.py           # the same, by hand: writes minigpt/_cuda*.so
    python csrc/cuda/build_cuda.py --check   # CI: compile every .cu (warnings are errors) and link
                                             # them, without and with cuBLAS; needs no GPU

The nvcc objects are linked into the cffi extension itself, so nothing else has to be found at
run time but libcudart and libcublas (an rpath points at them). Settings, by environment variable:

    NVCC              the compiler (default: nvcc on PATH, else $CUDA_HOME/bin/nvcc)
    MINIGPT_CUDA_ARCH GPU architectures, e.g. "90" or "80,90" (default "90": H100/H200; a PTX copy of
                      the last one is embedded too, which the driver compiles for newer GPUs)
    MINIGPT_CUBLAS    "0" builds without cuBLAS (every GEMM then runs the tiled kernel of matmul.cu)
    MINIGPT_SANITIZE  set: the cffi wrapper is compiled with -fsanitize=address,undefined
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HEADER = os.path.join(HERE, "minigpt_cuda.h")


def cdef_text():
    """The declarations between the cdef markers of minigpt_cuda.h: the one written interface."""
    text = open(HEADER).read()
    return text.split("/* cdef-begin */")[1].split("/* cdef-end */")[0]


def find_nvcc():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc and os.environ.get("CUDA_HOME"):
        nvcc = os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return None
    return nvcc


def cuda_root(nvcc):
    """The toolkit folder (with include/cuda_runtime.h): $CUDA_HOME, nvcc's parent, /usr/local/cuda."""
    for root in (os.environ.get("CUDA_HOME"), os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
                 "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "include", "cuda_runtime.h")):
            return root
    raise RuntimeError(f"no CUDA toolkit (include/cuda_runtime.h) found for {nvcc}: set CUDA_HOME")


def first_dir_with(dirs, pattern):
    for d in dirs:
        if d and glob.glob(os.path.join(d, pattern)):
            return d
    return None


def find_cudart(root):
    lib = first_dir_with([os.path.join(root, "lib64"), os.path.join(root, "lib"),
                          *glob.glob(os.path.join(root, "targets", "*", "lib"))], "libcudart.so*")
    if lib is None:
        raise RuntimeError(f"libcudart.so not found under the CUDA toolkit at {root}")
    return lib


def find_cublas(root):
    """(include dir, path of libcublas.so) from the toolkit or the nvidia-cublas wheel, or None."""
    if os.environ.get("MINIGPT_CUBLAS") == "0":
        return None
    candidates = [(os.path.join(root, "include"), [os.path.join(root, "lib64"), os.path.join(root, "lib"),
                                                   *glob.glob(os.path.join(root, "targets", "*", "lib"))])]
    purelib = sysconfig.get_paths()["purelib"]
    for sub in ("cu13", "cu12", "cublas"):  # pip install nvidia-cublas puts it under nvidia/cu13/
        base = os.path.join(purelib, "nvidia", sub)
        candidates.append((os.path.join(base, "include"), [os.path.join(base, "lib")]))
    for include, libdirs in candidates:
        if not os.path.exists(os.path.join(include, "cublas_v2.h")):
            continue
        for d in libdirs:
            libs = sorted(glob.glob(os.path.join(d, "libcublas.so*")))
            if libs:
                return include, libs[0]
    return None


def arch_flags():
    archs = [a.strip() for a in os.environ.get("MINIGPT_CUDA_ARCH", "90").replace(";", ",").split(",") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
    return flags


def nvcc_flags(cublas):
    flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC,-Wall,-Werror", "-Werror", "all-warnings",
             "-I", HERE, *arch_flags()]
    if cublas:
        flags += ["-DMINIGPT_CUBLAS", "-I", cublas[0]]
    return flags


def compile_objects(nvcc, outdir, cublas):
    """nvcc -c every csrc/cuda/*.cu into outdir, in parallel; skips objects newer than their inputs."""
    os.makedirs(outdir, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(HERE, "*.cu")))
    headers = glob.glob(os.path.join(HERE, "*.cuh")) + glob.glob(os.path.join(HERE, "*.h"))
    flags = nvcc_flags(cublas)
    stamp = os.path.join(outdir, "flags.txt")  # rebuild everything when the flags change
    same_flags = os.path.exists(stamp) and open(stamp).read() == " ".join(flags)

    def build(src):
        obj = os.path.join(outdir, os.path.basename(src)[:-3] + ".o")
        newest = max(os.path.getmtime(p) for p in [src, *headers])
        if same_flags and os.path.exists(obj) and os.path.getmtime(obj) > newest:
            return obj
        cmd = [nvcc, *flags, "-c", src, "-o", obj]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed on {os.path.basename(src)}:\n{' '.join(cmd)}\n{result.stderr}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(build, sources))
    with open(stamp, "w") as f:
        f.write(" ".join(flags))
    return objects


def make_builder():
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("MINIGPT_CUDA=1 asks for the CUDA backend, but nvcc was not found (PATH, $NVCC, "
                           "$CUDA_HOME/bin): install the CUDA toolkit, or build without MINIGPT_CUDA")
    root = cuda_root(nvcc)
    cudart = find_cudart(root)
    cublas = find_cublas(root)
    objects = compile_objects(nvcc, os.path.join(ROOT, "build", "cuda", "cublas" if cublas else "tiled"), cublas)
    rpaths = [cudart] + ([os.path.dirname(cublas[1])] if cublas else [])
    compile_args, link_args = [], []
    if os.environ.get("MINIGPT_SANITIZE"):
        compile_args = link_args = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    ffi = FFI()
    ffi.cdef(cdef_text())
    ffi.set_source("minigpt._cuda", '#include "minigpt_cuda.h"',
                   include_dirs=[HERE, os.path.join(root, "include")],
                   extra_objects=objects + ([cublas[1]] if cublas else []),
                   library_dirs=[cudart], libraries=["cudart", "stdc++"], runtime_library_dirs=rpaths,
                   extra_compile_args=compile_args, extra_link_args=link_args)
    return ffi


def check():
    """CI: compile and link every .cu without and with cuBLAS, and check every declared function is
    defined. Needs nvcc only; no GPU. Returns a process exit code."""
    nvcc = find_nvcc()
    if nvcc is None:
        print("nvcc not found: the CUDA sources were not compiled (nothing to check here)")
        return 0
    root = cuda_root(nvcc)
    declared = sorted({line.split("(")[0].split()[-1].lstrip("*") for line in cdef_text().splitlines()
                       if "(" in line and not line.lstrip().startswith(("/*", "*"))})
    variants = [None] + ([find_cublas(root)] if find_cublas(root) else [])
    with tempfile.TemporaryDirectory() as tmp:
        for cublas in variants:
            name = "cublas" if cublas else "tiled"
            objects = compile_objects(nvcc, os.path.join(tmp, name), cublas)
            lib = os.path.join(tmp, f"libminigpt_cuda_{name}.so")
            cmd = [nvcc, "-shared", *arch_flags(), "-o", lib, *objects, "-lcudart"]
            if cublas:
                cmd += ["-Xlinker", cublas[1], "-Xlinker", "-rpath=" + os.path.dirname(cublas[1])]
            subprocess.run(cmd, check=True)
            nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True)
            defined = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
            missing = [f for f in declared if f not in defined]
            if missing:
                print(f"{name}: declared in minigpt_cuda.h but not defined: {missing}")
                return 1
            print(f"{name}: compiled {len(objects)} .cu files and linked {os.path.basename(lib)}; "
                  f"all {len(declared)} functions defined")
    if len(variants) == 1:
        print("cuBLAS headers not found: checked the tiled-GEMM build only")
    return 0


if os.environ.get("MINIGPT_CUDA") == "1" or __name__ == "__main__" and "--check" not in sys.argv:
    ffibuilder = make_builder()

if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(check())
    tmp = os.path.join(ROOT, "build", "cffi")
    built = ffibuilder.compile(tmpdir=tmp, verbose=False)
    dest = os.path.join(ROOT, "minigpt", os.path.basename(built))
    shutil.copy(built, dest)
    print(f"built {dest}")
