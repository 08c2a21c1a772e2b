"""The fuzz suite's tiers: `ci` (bounded, the default: ~2 minutes on 2 cores) and `large` (hours of examples).

    pytest tests/fuzz                                   # the bounded tier
    ALIGNSAM_FUZZ=large pytest tests/fuzz               # the large tier: fuzz_large tests, 40x the examples
    HYPOTHESIS_PROFILE=fuzz-large pytest tests/fuzz     # only more examples

Limits each input must end within: `TIME_S` seconds and `MEMORY_BYTES` of address space (a CLI run in a
subprocess under RLIMIT_AS); every failure must be one `AlignSamError` line, never a traceback.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

LARGE = os.environ.get("ALIGNSAM_FUZZ") == "large"

settings.register_profile(
    "fuzz-ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz-large", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_NAME = os.environ.get("HYPOTHESIS_PROFILE", "")
FUZZ = settings.get_profile(_NAME if _NAME.startswith("fuzz-") else "fuzz-large" if LARGE else "fuzz-ci")
"""The settings of every fuzz property (a decorator): the tier's example count, no per-example deadline (the
CLI tier bounds time per input instead), derandomized in CI so a failure reproduces."""

TIME_S = 120 if LARGE else 60
"""Wall-clock seconds one CLI run over a corpus folder may take."""

MEMORY_BYTES = 8 * 2**30
"""Address space of a CLI subprocess (PyTorch alone maps ~2-3 GB of it; the inputs may add the rest)."""

large_only = pytest.mark.skipif(not LARGE, reason="large fuzz tier: set ALIGNSAM_FUZZ=large")
