"""Adding a gradient optimizer is one file: a class on the backprop base, under 40 lines,
written here into a temporary module, registered by importing it, passes the same
conformance checks as every registered optimizer without any other file knowing it."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

from conftest import (bad_values, build_optimizer, check_bad_value_is_exit_2, check_defaults_round_trip,
                      check_memory_model, check_steps_kill_and_resume, make_problem)
from harness import planner, registry

NAME = "test-rmsprop"
# RMSprop, which the package does not register (so nothing in it knows this optimizer)
MODULE = textwrap.dedent(f'''
    """RMSprop on the backprop base: torch.optim.RMSprop."""
    import torch

    from harness.params import Param
    from harness.registry import register_optimizer
    from optimizers.backprop import Backprop


    @register_optimizer("{NAME}", kinds=["weights"], description="RMSprop (torch.optim.RMSprop)")
    class RMSprop(Backprop):
        REFERENCE = "Tieleman & Hinton, Lecture 6.5, COURSERA: Neural Networks for Machine Learning (2012)"
        PARAMS = {{
            "lr": Param(0.01, float, "learning rate", low=0.0),
            "alpha": Param(0.99, float, "smoothing of the squared-gradient average", low=0.0, high=1.0),
            "momentum": Param(0.0, float, "momentum (0 = none, no buffer)", low=0.0, high=1.0),
            "centered": Param(False, bool, "divide by the gradient's variance estimate"),
        }}

        @classmethod
        def states_per_param(cls, hp):   # square average, momentum buffer, gradient average
            return 1 + (hp["momentum"] > 0) + hp["centered"]

        def torch_optimizer(self, param_groups):
            return torch.optim.RMSprop(param_groups, lr=self.hp["lr"], alpha=self.hp["alpha"],
                                       momentum=self.hp["momentum"], centered=self.hp["centered"],
                                       weight_decay=self.hp["weight_decay"])
''')


@pytest.fixture(scope="module")
def new_optimizer(tmp_path_factory):
    """The module written to a temporary folder and imported (which registers it); taken
    out of the registry again afterwards."""
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "rmsprop_plugin.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("rmsprop_plugin")
        yield module
    finally:
        registry.OPTIMIZERS.pop(NAME, None)
        sys.modules.pop("rmsprop_plugin", None)
        sys.path.remove(str(folder))


def test_the_whole_optimizer_is_one_class_under_40_lines(new_optimizer):
    import inspect

    lines = inspect.getsource(new_optimizer.RMSprop).splitlines()
    assert len(lines) < 40 and registry.optimizer(NAME).factory is new_optimizer.RMSprop


def test_it_passes_conformance(new_optimizer, tmp_path, monkeypatch, capsys):
    check_steps_kill_and_resume(NAME, "weights", tmp_path / "run", monkeypatch)
    check_defaults_round_trip(NAME)
    check_memory_model(NAME, "weights")
    for key, param in registry.optimizer(NAME).schema().items():
        for value in bad_values(param):
            check_bad_value_is_exit_2(NAME, "weights", key, value, tmp_path / f"bad-{key}-{value}", capsys)


def test_it_steps_what_torch_rmsprop_steps(new_optimizer, one_thread):
    """The base adds nothing to the torch optimizer's arithmetic on fp32 weights."""
    problem = make_problem("digits-mlp", seed=2)
    problem.build(torch.device("cpu"))
    start = [p.detach().clone() for _, p in problem.trainable()]
    opt = build_optimizer(NAME, problem, seed=2, momentum=0.5)
    opt.step(0)
    opt.step(1)
    got = [p.detach().clone() for _, p in problem.trainable()]
    with torch.no_grad():
        for (_, p), s in zip(problem.trainable(), start):
            p.copy_(s)
    params = [p for _, p in problem.trainable()]
    reference = torch.optim.RMSprop(params, lr=0.01, momentum=0.5)
    for k in (0, 1):
        reference.zero_grad()
        sum(problem.loss(piece) * w for piece, w in problem.micro_batches(problem.batch(k))).backward()
        reference.step()
    assert all(torch.equal(a, p.detach()) for a, p in zip(got, params))


def test_its_memory_is_weights_gradients_and_its_declared_states(new_optimizer):
    facts = planner.ModelFacts(param_count=1000, trainable_count=1000, weight_bytes=4000, trainable_bytes=4000)
    hp = {k: p.default for k, p in registry.optimizer(NAME).schema().items()}
    parts = new_optimizer.RMSprop.memory_model(hp, facts)
    assert parts["optimizer_states"] == 4000                   # held all run: the square average
    phases = new_optimizer.RMSprop.memory_phases(hp, facts)
    assert phases["backward"]["gradients"] == 4000 and phases["step"]["gradients"] == 4000
    assert new_optimizer.RMSprop.memory_model({**hp, "momentum": 0.9, "centered": True},
                                              facts)["optimizer_states"] == 3 * 4000
