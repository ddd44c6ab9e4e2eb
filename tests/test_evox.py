"""The evox adapter: parity with EvoX called directly on bbob-f1-d5, its seeding kept
apart from torch's global generator, learning on a small net, a bad name refused."""

from __future__ import annotations

import pytest
import torch

from conftest import build_optimizer, make_problem, run_cli, run_inprocess

pytest.importorskip("evox")

STEPS, POP = 8, 10


def direct(name: str, seed: int) -> list[float]:
    """EvoX as its documentation runs it: the algorithm on the box, StdWorkflow, a Problem
    over cocoex's f1 (instance 1, 5-D) minus f_opt; the best fitness of each step."""
    import cocoex
    from evox import algorithms
    from evox.core import Problem
    from evox.workflows import StdWorkflow

    from optimizers.evox_opt import evox_seed

    f = cocoex.BareProblem("bbob", 1, 5, 1)
    fopt = float(f.best_value())
    best = []

    class F1(Problem):
        def evaluate(self, pop):
            values = torch.tensor([float(f(x.double().numpy())) - fopt for x in pop], dtype=pop.dtype)
            best.append(float(values.min()))
            return values

    torch.manual_seed(evox_seed(seed))
    algorithm = getattr(algorithms, name)(POP, torch.full((5,), -5.0), torch.full((5,), 5.0))
    workflow = StdWorkflow(algorithm, F1())
    workflow.init_step()
    for _ in range(STEPS - 1):
        workflow.step()
    return best


@pytest.mark.parametrize("name", ["PSO", "DE"])
def test_same_values_as_evox_called_directly_on_bbob_f1_d5(tmp_path, name):
    m = run_inprocess(tmp_path, "evox", STEPS, problem="bbob-f1-d5", name=name, pop_size=POP)
    ours = [r["loss"] for r in m if r.get("loss") is not None]
    assert len(ours) == STEPS and ours == direct(name, 0)
    assert m[-1]["evals"] == STEPS * POP


def test_global_torch_generator_is_left_alone():
    """EvoX's draws come from the adapter's own generator state: building and stepping it
    neither moves torch's global generator nor depends on where it stands."""
    prob = make_problem("bbob-f1-d5")
    prob.build(torch.device("cpu"))
    losses = []
    for outside in (1, 2):
        torch.manual_seed(outside)
        expected = torch.rand(3)
        torch.manual_seed(outside)
        opt = build_optimizer("evox", prob, pop_size=POP)
        losses.append([opt.step(k).loss for k in range(3)])
        assert torch.equal(torch.rand(3), expected)
    assert losses[0] == losses[1]


def test_openes_improves_digits_f1(tmp_path):
    # Measured (seed 0, 30 steps of 20): macro-F1 0.09 -> 0.546; the bound keeps about half.
    m = run_inprocess(tmp_path, "evox", 30, problem="digits-mlp", name="OpenES")
    assert m[0]["metric"] < 0.2 and m[-1]["metric"] > 0.3


def test_unknown_algorithm_is_one_line_exit_2(tmp_path):
    proc = run_cli("run", "--optimizer", "evox", "--problem", "bbob-f1-d5", "--steps", "1",
                   "--set", "name=PS0", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "name='PS0'" in proc.stderr and "PSO" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


def test_the_default_algorithm_is_one_evox_lists():
    """check_hparams accepts the default name without importing evox: it must be valid."""
    from optimizers.evox_opt import EvoX, algorithm_names

    assert EvoX.PARAMS["name"].default in algorithm_names()
