import os

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# real test data, in the repository (tests/data/README.md lists each file's source and licence)
DATA = os.path.join(ROOT, "tests", "data")
WARC_DIR = os.path.join(DATA, "warc")
SHAKESPEARE = os.path.join(DATA, "tinyshakespeare.txt")
GPT2_RANKS = os.path.join(DATA, "gpt2.tiktoken")

# CI runs on 2 shared cores: no per-example deadline; example counts are set per test
settings.register_profile("minigpt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("minigpt")


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct's GGUF, pulled (and verified) on first use. In CI a failure to pull
    fails the tests that need it; elsewhere they skip, saying why."""
    from minigpt.pull import PullError, pull
    try:
        return pull("smollm2", progress=False)
    except PullError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"SmolLM2 not available: {e}")
