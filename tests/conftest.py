import os

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# CI runs on 2 shared cores: no per-example deadline; example counts are set per test
settings.register_profile("minigpt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("minigpt")


def shared_data(name):
    """Path of a file in ../shared/data/, or skip: a user's fresh checkout has no ../shared/."""
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"test data {name} not found at {path} (it lives in the project's shared/ folder)")
    return path
