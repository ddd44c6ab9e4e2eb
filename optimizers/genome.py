"""GENOME and GENOME+ (arXiv 2503.01155): population evolution of LoRA experts.

Genes are the adapter tensors of a lora-* problem (its trainable() list); an
individual is one list of tensors, the population is N of them (adapters only,
never a copy of the base model). Fitness = the problem's validation accuracy
(exact match, mean over tasks). One runner step = one iteration:

  init (step 0)  individual i < #experts is expert i (init=mixed), the others
                 random linear combinations sum_j w_j E_j, w ~ Uniform then
                 normalised (init=combinations: all of them);
  crossover      N trials, each with probability crossover_rate: two parents
                 drawn fitness-proportionally (p_i = f_i / sum f), child
                 t x1 + (1 - t) x2 with t = f1 / (f1 + f2);
  mutation       each individual, with probability individual_mutation_rate,
                 yields a mutant: a Bernoulli(gene_mutation_rate) mask of its
                 elements gets N(0, mutation_sigma^2) noise;
  succession     (GENOME+) every offspring carries an experience vector v,
                 inherited from its parents (weighted like the genes), then
                 v <- inertia v + phi_g r_g (g - x) + phi_p r_p (p - x) + phi_w r_w (x - w)
                 x <- x + lambda v
                 with g the best individual so far, p the best ancestor of this
                 lineage, w the current worst, r ~ U(0, 1);
  selection      over parents and offspring: the top ceil(elite_ratio N) are kept,
                 the other slots are drawn without replacement with probability
                 proportional to fitness;
  ensemble       (GENOME+) the solution is the top ensemble_k individuals, and
                 the metric is their majority vote per sample (ties: the better
                 individual's answer).

Each iteration scores only the new offspring: `evaluate_members(step, indices)`
scores any slice of them (offspring are a pure function of (seed, step), so
processes that each score a slice agree on everything else), and
`gather_fitness(step)` is the one place all their fitness values are assembled.
Logged loss = 1 - the best validation accuracy in the population.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from harness import distributed
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer, register_variant
from harness.seeding import derive_seed


# -- operators (pure functions of tensors and numbers; tested directly) ---------

def crossover(x1, x2, f1: float, f2: float):
    """Fitness-weighted interpolation t x1 + (1 - t) x2, t = f1 / (f1 + f2) (0.5 if both 0)."""
    t = 0.5 if f1 + f2 <= 0 else f1 / (f1 + f2)
    return [t * a + (1 - t) * b for a, b in zip(x1, x2)], t


def mutate(x, seed: int, gene_rate: float, sigma: float):
    """A copy of x where a Bernoulli(gene_rate) mask of elements gets N(0, sigma^2) noise."""
    out = []
    for i, a in enumerate(x):
        g = torch.Generator(device=a.device).manual_seed(derive_seed(seed, i))
        mask = torch.rand(a.shape, generator=g, device=a.device) < gene_rate
        noise = torch.randn(a.shape, generator=g, device=a.device, dtype=a.dtype) * sigma
        out.append(a + noise * mask)
    return out


def roulette(fitness, rng: np.random.Generator, size: int, replace: bool = True) -> np.ndarray:
    """Indices drawn with probability f_i / sum f (uniform when all are 0)."""
    f = np.clip(np.asarray(fitness, dtype=np.float64), 0, None)
    p = f / f.sum() if f.sum() > 0 else np.full(len(f), 1.0 / len(f))
    if not replace and np.count_nonzero(p) < size:  # too few non-zero: mix in uniform
        p = 0.5 * p + 0.5 / len(p)
    return rng.choice(len(f), size=size, replace=replace, p=p)


def select(fitness, n: int, elite_ratio: float, rng: np.random.Generator) -> list[int]:
    """Survivors: the top ceil(elite_ratio n) by fitness, then fitness-proportional
    sampling without replacement among the rest."""
    f = np.asarray(fitness, dtype=np.float64)
    order = np.argsort(-f, kind="stable")
    n_elite = min(n, max(1, math.ceil(elite_ratio * n - 1e-9)))
    elites = [int(i) for i in order[:n_elite]]
    rest = np.array([i for i in range(len(f)) if i not in elites])
    if n - n_elite > 0 and len(rest):
        picked = roulette(f[rest], rng, min(n - n_elite, len(rest)), replace=False)
        elites += [int(rest[i]) for i in picked]
    return elites


def succession(x, v, gbest, pbest, worst, hp, rng: np.random.Generator):
    """One experience update; returns (new x, new v)."""
    rg, rp, rw = rng.random(3)
    new_v = [hp["inertia"] * vi + hp["phi_global"] * rg * (g - xi) + hp["phi_personal"] * rp * (p - xi)
             + hp["phi_worst"] * rw * (xi - w)
             for xi, vi, g, p, w in zip(x, v, gbest, pbest, worst)]
    lam = hp["succession_lambda"]
    return [xi + lam * vi for xi, vi in zip(x, new_v)], new_v


def _combine(ts, weights):
    return [sum(w * t[i] for w, t in zip(weights, ts)) for i in range(len(ts[0]))]


class _Individual:
    __slots__ = ("x", "f", "v", "pbest", "pbest_f")

    def __init__(self, x, f=None, v=None, pbest=None, pbest_f=-1.0):
        self.x, self.f, self.v, self.pbest, self.pbest_f = x, f, v, pbest, pbest_f


@register_optimizer("genome", kinds=["experts"],
                    description="GENOME: crossover, mutation, selection of a LoRA expert population "
                                "(lora-* problems)")
class Genome(Optimizer):
    REFERENCE = "GENOME / GENOME+: arXiv 2503.01155 and the authors' run_genome.py / run_genomeplus.py defaults"
    SMOKE_SETTINGS = {"population": 4, "iterations": 3}
    POPULATION_PARAM = "population"
    # The authors' released defaults (run_genome.py; the genome+ variant below overrides with
    # run_genomeplus.py's); docs/genome.md lists them and which settings are ours.
    PARAMS = {
        "population": Param(10, int, "individuals N", low=2),
        "iterations": Param(50, int, "iterations K; later steps change nothing (evals 0)", low=1),
        "crossover_rate": Param(0.8, float, "probability of each of N crossover trials", low=0.0, high=1.0),
        "individual_mutation_rate": Param(0.15, float, "probability an individual yields a mutant",
                                          low=0.0, high=1.0),
        "gene_mutation_rate": Param(0.01, float, "fraction of a mutant's elements perturbed",
                                    low=0.0, high=1.0),
        "mutation_sigma": Param(1e-2, float, "std of the mutation noise (weight units)", low=0.0),
        "elite_ratio": Param(0.02, float, "fraction kept by rank before fitness-proportional sampling",
                             low=0.0, high=1.0),
        "init": Param("mixed", str, "mixed: experts then random combinations; combinations: all random",
                      choices=("mixed", "combinations")),
        "succession": Param(False, bool, "GENOME+ experience vectors"),
        "inertia": Param(0.5, float, "succession: weight of the inherited experience", low=0.0),
        "phi_global": Param(1.0, float, "succession: pull toward the global best", low=0.0),
        "phi_personal": Param(0.5, float, "succession: pull toward the lineage's best", low=0.0),
        "phi_worst": Param(0.5, float, "succession: push away from the worst", low=0.0),
        "succession_lambda": Param(0.3, float, "succession: step x += lambda v", low=0.0),
        "ensemble": Param(False, bool, "solution = majority vote of the top ensemble_k"),
        "ensemble_k": Param(3, int, "ensemble size", low=1),
    }
    DISTRIBUTED = True

    @classmethod
    def memory_model(cls, hp, facts) -> dict[str, int]:
        """Adapter tensors only (facts.trainable_bytes = one adapter): N parents + at most
        2N offspring (N crossover trials + N mutants); GENOME+ adds an experience vector
        and a lineage best per individual and offspring, and the global best; setup holds
        the experts (counted as N, the paper's N = #experts) next to the first population.
        Plus one no-grad forward."""
        n, one = hp["population"], facts.trainable_bytes
        # parents + offspring; GENOME+: a v and a lineage best for each of them, + global best
        pop = 3 * n + ((2 * 3 * n + 1) if hp["succession"] else 0)
        return {"population": int(max(pop, 2 * n) * one),
                "activations": int(facts.forward_activation_bytes)}

    # -- lifecycle ---------------------------------------------------------------
    def setup(self) -> None:
        hp = self.hp
        experts = self.problem.expert_adapters()
        rng = np.random.default_rng(derive_seed(self.seed, "genome-init"))
        first = []
        for i in range(hp["population"]):
            if hp["init"] == "mixed" and i < len(experts):
                first.append([t.clone() for t in experts[i]])
            else:
                w = rng.random(len(experts))
                first.append(_combine(experts, w / w.sum()))
        del experts
        self.pop: list[_Individual] = []
        self.pending = [_Individual(x) for x in first]
        self.gbest, self.gbest_f = None, -1.0
        self.done = 0

    def _zeros(self, x):
        return [torch.zeros_like(t) for t in x]

    # -- scoring (shardable) -------------------------------------------------------
    @torch.no_grad()
    def evaluate_members(self, step: int, indices) -> list[float]:
        """Validation accuracy of the listed pending individuals (this step's offspring,
        or the initial population at step 0). The model ends on the best one's genes."""
        out = []
        for j in indices:
            self.problem.set_adapter(self.pending[j].x)
            out.append(float(self.problem.accuracy("val")))
        return out

    def gather_fitness(self, step: int) -> list[float]:
        # Under torchrun each rank scores its slice; the population and the operators'
        # generators (seeded by step) are the same on every rank, so all stay in step.
        return distributed.evaluate_population(
            len(self.pending), lambda idx: self.evaluate_members(step, idx), self.problem.device)

    # -- one iteration -------------------------------------------------------------
    def _offspring(self, step: int) -> list[_Individual]:
        hp, pop = self.hp, self.pop
        rng = np.random.default_rng(derive_seed(self.seed, "genome", step))
        fit = [ind.f for ind in pop]
        kids: list[_Individual] = []
        for _ in range(hp["population"]):
            if rng.random() < hp["crossover_rate"]:
                i1, i2 = roulette(fit, rng, 2, replace=len(pop) < 2)
                a, b = pop[int(i1)], pop[int(i2)]
                x, t = crossover(a.x, b.x, a.f, b.f)
                kid = _Individual(x)
                if hp["succession"]:
                    kid.v = [t * va + (1 - t) * vb for va, vb in zip(a.v, b.v)]
                    best = a if a.pbest_f >= b.pbest_f else b
                    kid.pbest, kid.pbest_f = best.pbest, best.pbest_f
                kids.append(kid)
        for i, ind in enumerate(pop):
            if rng.random() < hp["individual_mutation_rate"]:
                x = mutate(ind.x, derive_seed(self.seed, "mutate", step, i),
                           hp["gene_mutation_rate"], hp["mutation_sigma"])
                kids.append(_Individual(x, v=ind.v, pbest=ind.pbest, pbest_f=ind.pbest_f))
        if hp["succession"] and kids:
            worst = min(pop, key=lambda ind: ind.f).x
            for kid in kids:
                kid.x, kid.v = succession(kid.x, kid.v, self.gbest, kid.pbest, worst, hp, rng)
        return kids

    def _admit(self, kids: list[_Individual], fitness: list[float]) -> None:
        for kid, f in zip(kids, fitness):
            kid.f = f
            if self.hp["succession"]:
                if kid.v is None:
                    kid.v = self._zeros(kid.x)
                if f > kid.pbest_f:
                    kid.pbest, kid.pbest_f = kid.x, f
            if f > self.gbest_f:
                self.gbest, self.gbest_f = kid.x, f

    def step(self, step: int) -> StepResult:
        hp = self.hp
        evals = 0
        if not self.pop:  # first call: score the initial population
            fitness = self.gather_fitness(step)
            evals += len(fitness)
            self._admit(self.pending, fitness)
            self.pop, self.pending = self.pending, []
        if self.done < hp["iterations"]:
            self.pending = self._offspring(step)
            fitness = self.gather_fitness(step) if self.pending else []
            evals += len(fitness)
            self._admit(self.pending, fitness)
            pool = self.pop + self.pending
            rng = np.random.default_rng(derive_seed(self.seed, "genome-select", step))
            keep = select([ind.f for ind in pool], hp["population"], hp["elite_ratio"], rng)
            self.pop = [pool[i] for i in keep]
            self.pending = []
            self.done += 1
        best = max(self.pop, key=lambda ind: ind.f)
        self.problem.set_adapter(best.x)
        fits = [ind.f for ind in self.pop]
        # each fitness is one forward over the validation samples
        return StepResult(loss=1.0 - best.f, evals=evals, forwards=evals, extra={
            "best_val_accuracy": best.f, "mean_val_accuracy": float(np.mean(fits)),
            "iteration": self.done})

    def ranked(self) -> list[_Individual]:
        return sorted(self.pop, key=lambda ind: -ind.f)

    def solution(self):
        if not self.hp["ensemble"] or not self.pop:
            return None
        from problems.lora import Ensemble

        return Ensemble([ind.x for ind in self.ranked()[: self.hp["ensemble_k"]]])

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"pop": [(i.x, i.f, i.v, i.pbest, i.pbest_f) for i in self.pop],
                "gbest": self.gbest, "gbest_f": self.gbest_f, "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.pop = [_Individual(*t) for t in state["pop"]]
        self.gbest, self.gbest_f, self.done = state["gbest"], state["gbest_f"], state["done"]
        self.pending = []
        if self.pop:
            self.problem.set_adapter(max(self.pop, key=lambda ind: ind.f).x)


# GENOME+ is GENOME with succession and the ensemble on, at the defaults of the
# authors' run_genomeplus.py (its own rates, inertia/cognitive/social/repel/lambda_step).
register_variant(
    "genome+", of="genome",
    description="GENOME+: GENOME with succession (experience vectors) and a top-k majority-vote "
                "ensemble (lora-* problems)",
    succession=True, ensemble=True, iterations=20, individual_mutation_rate=0.3,
    gene_mutation_rate=0.1, mutation_sigma=0.05, elite_ratio=0.1, inertia=0.2, phi_global=0.2,
    phi_personal=0.2, phi_worst=0.1, succession_lambda=0.5,
)
