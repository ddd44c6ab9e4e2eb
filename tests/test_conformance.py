"""The optimizer contract, checked for every registered optimizer on the smallest
problem of each kind it accepts (models: evosax tests/conftest.py, optax
alias_test.py). A new optimizer is covered the day it registers: the cases come
from the registry alone, and an adapter that needs smaller settings to keep the
smoke test short declares them itself (Optimizer.SMOKE_SETTINGS).

For each (optimizer, kind): 3 steps run and record; killed after step 2 and
resumed gives the uninterrupted trajectory (time fields excluded); a bad value
of each declared hyperparameter is exit 2 with nothing written; defaults
round-trip through the parser; the memory model gives non-negative integers.
The checks themselves are in conftest.py (tests/test_new_optimizer.py runs them
on an optimizer it defines).
"""

from __future__ import annotations

import pytest

from conftest import (SMALLEST, bad_values, check_bad_value_is_exit_2, check_defaults_round_trip,
                      check_memory_model, check_steps_kill_and_resume)
from harness import registry

registry.load_all()

CASES = [(name, kind) for name, entry in sorted(registry.OPTIMIZERS.items()) for kind in entry.kinds]


pytestmark = pytest.mark.usefixtures("module_cache")   # the LoRA world and trained nets built once


def test_every_kind_has_a_smallest_problem():
    assert {kind for _, kind in CASES} == set(registry.KINDS) <= set(SMALLEST)


@pytest.mark.parametrize("name,kind", CASES)
def test_three_steps_then_kill_and_resume_is_exact(name, kind, tmp_path, monkeypatch):
    check_steps_kill_and_resume(name, kind, tmp_path, monkeypatch)


BAD = [(name, kind, key, value) for name, kind in CASES
       for key, param in registry.OPTIMIZERS[name].schema().items()
       for value in bad_values(param)]


@pytest.mark.parametrize("name,kind,key,value", BAD)
def test_a_bad_value_is_exit_2_and_writes_nothing(name, kind, key, value, tmp_path, capsys):
    check_bad_value_is_exit_2(name, kind, key, value, tmp_path, capsys)


@pytest.mark.parametrize("name", sorted(registry.OPTIMIZERS))
def test_defaults_round_trip_through_the_parser(name):
    check_defaults_round_trip(name)


@pytest.mark.parametrize("name,kind", CASES)
def test_memory_model_gives_non_negative_integers(name, kind):
    check_memory_model(name, kind)
