"""The gradient baselines on the backprop base (muon, sgd and the pytorch-optimizer ones)
step exactly what a plain PyTorch loop steps with the same library object: same init,
same batches, bit-identical losses and weights (fp32, one thread). Schedule-Free is also
evaluated where its authors evaluate it (eval() mode: the averaged point)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_optimizer, make_problem
from harness import registry
from harness.errors import UsageError

registry.load_all()


def _muon(params, model, names):
    from optimizers.muon import hidden_matrices

    hidden = hidden_matrices(model, names)
    return [torch.optim.Muon([p for p, h in zip(params, hidden) if h], lr=0.02, weight_decay=0.01,
                             momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw"),
            torch.optim.AdamW([p for p, h in zip(params, hidden) if not h], lr=3e-3, betas=(0.9, 0.95),
                              weight_decay=0.01)]


def _library(name):
    import pytorch_optimizer

    return getattr(pytorch_optimizer, name)


# name: (--set values, the plain loop's optimizer(s) from (params, model, names))
CASES = {
    "muon": ({"weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw"}, _muon),
    "sgd": ({"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
            lambda ps, m, n: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    "lion": ({"lr": 3e-4, "weight_decay": 0.1},
             lambda ps, m, n: _library("Lion")(ps, lr=3e-4, betas=(0.9, 0.99), weight_decay=0.1)),
    "soap": ({"precondition_frequency": 2},
             lambda ps, m, n: _library("SOAP")(ps, lr=3e-3, betas=(0.95, 0.95), weight_decay=0.01,
                                               precondition_frequency=2)),
    "adamw-schedulefree": ({"weight_decay": 0.01},
                           lambda ps, m, n: _library("ScheduleFreeAdamW")(ps, lr=2.5e-3, weight_decay=0.01)),
    "ademamix": ({"weight_decay": 0.01},
                 lambda ps, m, n: _library("AdEMAMix")(ps, lr=1e-3, weight_decay=0.01, weight_decouple=True)),
    "mars": ({}, lambda ps, m, n: _library("MARS")(ps, lr=3e-3, betas=(0.95, 0.99), mars_type="adamw")),
    "prodigy": ({"weight_decay": 0.01},
                lambda ps, m, n: _library("Prodigy")(ps, lr=1.0, weight_decay=0.01, weight_decouple=True)),
}
STEPS = 4


@pytest.mark.parametrize("name", sorted(CASES))
def test_it_steps_what_the_plain_loop_steps(name, one_thread):
    sets, reference = CASES[name]
    problem = make_problem("digits-mlp", seed=3, depth=2)   # two hidden matrices for muon
    problem.build(torch.device("cpu"))
    start = [p.detach().clone() for _, p in problem.trainable()]
    opt = build_optimizer(name, problem, seed=3, **sets)
    got_losses, got_metrics = [], []
    for k in range(STEPS):
        got_losses.append(opt.step(k).loss)
        with opt.evaluation():
            got_metrics.append(problem.evaluate()["test_loss"])
    got = [p.detach().clone() for _, p in problem.trainable()]

    with torch.no_grad():
        for (_, p), s in zip(problem.trainable(), start):
            p.copy_(s)
    names = [n for n, _ in problem.trainable()]
    params = [p for _, p in problem.trainable()]
    built = reference(params, problem.model, names)
    optimizers = built if isinstance(built, list) else [built]
    losses, metrics = [], []
    for k in range(STEPS):
        for o in optimizers:
            o.zero_grad()
        loss = sum(problem.loss(piece) * w for piece, w in problem.micro_batches(problem.batch(k)))
        loss.backward()
        for o in optimizers:
            o.step()
        losses.append(float(loss.detach()))
        if name == "adamw-schedulefree":   # the authors: evaluate in eval() mode, train in train()
            optimizers[0].eval()
            metrics.append(problem.evaluate()["test_loss"])
            optimizers[0].train()
        else:
            metrics.append(problem.evaluate()["test_loss"])
    assert got_losses == losses and got_metrics == metrics
    assert all(torch.equal(a, p.detach()) for a, p in zip(got, params))


def _tensor_bytes(state) -> int:
    """Bytes of the tensors (not the 0-d step counters) in a torch optimizer's state,
    through the lists SOAP keeps its preconditioners in."""
    if torch.is_tensor(state):
        return state.numel() * state.element_size() if state.dim() else 0
    if isinstance(state, (list, tuple)):
        return sum(_tensor_bytes(v) for v in state)
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    return 0


@pytest.mark.parametrize("problem_name,problem_hp", [("digits-mlp", {"depth": "2"}), ("qwen3-tiny", {})])
@pytest.mark.parametrize("name", sorted(CASES) + ["adam"])
def test_planned_optimizer_state_is_what_the_library_holds(name, problem_name, problem_hp, one_thread):
    """The planner's optimizer_states against the bytes the library's state holds after a few
    steps, exactly: SOAP's preconditioners from the shapes, Muon's split from the layers."""
    from harness import planner

    sets = {k: str(v) for k, v in CASES.get(name, ({},))[0].items()}
    plan = planner.plan(name, problem_name, {**sets, **problem_hp}, device="cpu")
    problem = make_problem(problem_name, seed=0, **{k: int(v) for k, v in problem_hp.items()})
    problem.build(torch.device("cpu"))
    opt = build_optimizer(name, problem, seed=0, **sets)
    for k in range(3):
        opt.step(k)
    torch_opts = getattr(opt.opt, "optimizers", [opt.opt])
    held = sum(_tensor_bytes(list(o.state.values())) for o in torch_opts)
    assert plan.breakdown["optimizer_states"] == held, (plan.breakdown, held)


def test_schedulefree_is_scored_at_its_average_and_trains_at_y(one_thread):
    problem = make_problem("digits-mlp", seed=0)
    problem.build(torch.device("cpu"))
    opt = build_optimizer("adamw-schedulefree", problem, seed=0)
    for k in range(3):
        opt.step(k)
    y = [p.detach().clone() for _, p in problem.trainable()]
    with opt.evaluation():
        x = [p.detach().clone() for _, p in problem.trainable()]
    assert not all(torch.equal(a, b) for a, b in zip(x, y))
    assert all(torch.allclose(a, p, atol=1e-6) for a, (_, p) in zip(y, problem.trainable()))


def test_muon_steps_hidden_matrices_and_adamw_the_rest():
    from optimizers.muon import hidden_matrices

    problem = make_problem("digits-mlp", seed=0, depth=2)
    problem.build(torch.device("cpu"))
    names = [n for n, _ in problem.trainable()]
    hidden = [n for n, h in zip(names, hidden_matrices(problem.model, names)) if h]
    assert hidden == ["0.weight", "2.weight"]   # not the biases, not the output layer (4.weight)


@pytest.mark.parametrize("name", ["muon", "soap", "mars", "prodigy"])
def test_shard_fsdp_is_refused_in_one_line_by_those_that_need_whole_tensors(name, tmp_path, capsys):
    from cli import main

    code = main(["run", "--optimizer", name, "--problem", "digits-mlp", "--steps", "1",
                 "--set", "optimizer.shard=fsdp", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "shard=fsdp" in err[0] and "ddp" in err[0], err
    assert not (tmp_path / "runs").exists()
    assert registry.optimizer(name).factory.SHARD_SETTINGS == {}


def test_muon_is_refused_in_one_line_on_a_torch_without_it(monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon")
    entry = registry.optimizer("muon")
    hp = {k: p.default for k, p in entry.schema().items()}
    with pytest.raises(UsageError, match="torch.optim.Muon"):
        entry.factory.check_hparams(hp)


def test_at_least_eight_gradient_optimizers_are_registered():
    assert len([n for n, e in registry.OPTIMIZERS.items() if e.factory.BACKPROP]) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "lion", "ademamix", "adamw-schedulefree"])
def test_those_that_keep_shard_fsdp_follow_one_process_on_two_ranks(name, tmp_path, one_thread):
    """FSDP2 on 2 CPU ranks (gloo) steps the library's object on DTensor shards: the losses and
    the final metric follow one process's up to summation order (as adam's, tests/test_fsdp.py)."""
    from conftest import load_jsonl, only_run_dir, run_inprocess, torchrun

    one = run_inprocess(tmp_path / "one", name, 4)
    proc = torchrun("--optimizer", name, "--problem", "qwen3-tiny", "--steps", "4", "--set", "shard=fsdp",
                    "--checkpoint-every", "2", "--runs-dir", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_jsonl(only_run_dir(tmp_path / "two") / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(one[1:], two[1:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3, abs=0)
    assert two[-1]["metric"] == pytest.approx(one[-1]["metric"], rel=1e-3)
