"""Deep GA (Such et al. 2017): a mutation-only genetic algorithm on the weights.

The paper's algorithm box (Algorithm 1, "Simple Genetic Algorithm") and what each
line is here, generation g = the runner's step k:

  for i = 1..N-1 of generation g:           member 0 is the elite, members 1..N-1 children
      k = uniformRandom(1, T)               parent: uniform among the top T of generation
                                            g-1 by fitness (truncation selection)
      P_i = psi(P_k) = P_k + sigma eps      Gaussian mutation with the mutation power sigma
      F_i = F(P_i)                          fitness = -loss on the generation's one batch
  P^g <- [Elite, P^g - {Elite}]             the elite joins unmutated and is re-evaluated
  Elite <- best of the candidates           here: the best member of generation g

An individual is its chain of mutations ((seed, sigma), ...) from the problem's
initial weights theta_0, the paper's compact encoding (section 3 of the paper;
uber-research/deep-neuroevolution stores (seed, mutation power) pairs the same
way): theta = theta_0 + sum over the chain of sigma eps(seed), eps regenerated
per tensor from (seed, tensor index) as es's noise (optimizers/_perturb.py).
Weights are held once, at the elite: member j is scored by moving the weights
in place from the elite's chain to j's (take back the links of the elite after
their common prefix, add j's), scoring, and moving back; so the memory is one
forward's plus the population's seed chains, as es's. The move back is exact
only up to float rounding (as es's restore), so under torchrun each rank replays
the members it does not score and every rank holds the same weights bit for bit.
After scoring, the weights move to the new elite, which the held-out metric
scores.

Where the paper is silent or this setting differs, what was chosen:
- Initialisation: the paper draws N independent random networks phi(N(0, I));
  a weights problem gives one initialised model, so generation 0 is theta_0
  itself (the elite, empty chain) and N-1 mutants of it.
- Elite selection: the paper re-scores the top 10 and the previous elite on 30
  extra episodes because one Atari episode is a noisy fitness; here every member
  of a generation is scored on the same batch, the elite is the generation's best
  (ties: the lower member index, so the previous elite keeps its place), and it is
  re-evaluated on the next generation's fresh batch as member 0 (the paper's
  "only include elite once"). No extra evaluations are spent.
- The logged loss is the new elite's loss on this generation's batch (selected
  on that batch, so optimistic); `mean_member_loss` is the population's mean.
- sigma may follow a schedule (the reference code's mutation_power schedule),
  off by default; the sigma of each mutation is stored in its link.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.errors import UsageError
from harness.optimizer import StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from optimizers._perturb import Perturber, in_place_phases
from optimizers._schedules import schedule_params
from optimizers.population import Population

Chain = tuple   # of (seed, sigma) links, oldest first; children share their parent's links


def move(src: Chain, dst: Chain) -> tuple[list[int], list[float]]:
    """(seeds, coefficients) that take theta(src) to theta(dst): minus src's links after
    the common prefix, plus dst's."""
    p = 0
    while p < min(len(src), len(dst)) and src[p] == dst[p]:
        p += 1
    links = [(s, -sig) for s, sig in src[p:]] + [(s, sig) for s, sig in dst[p:]]
    return [s for s, _ in links], [c for _, c in links]


def next_generation(chains: list[Chain], fitness: np.ndarray, elite: int, truncation: int,
                    rng: np.random.Generator, mutation) -> list[Chain]:
    """Algorithm 1's generation step: [elite unmutated] + N-1 children, each a uniform
    choice among the top `truncation` by fitness with one mutation link appended
    (mutation(i) -> the (seed, sigma) link of child i)."""
    order = np.argsort(-np.nan_to_num(fitness, nan=-np.inf), kind="stable")
    parents = order[:truncation]
    picks = rng.integers(0, len(parents), size=len(chains) - 1)
    return [chains[elite]] + [chains[parents[k]] + (mutation(i),) for i, k in enumerate(picks, start=1)]


@register_optimizer("deep-ga", kinds=["weights"],
                    description="Deep GA: truncation selection, Gaussian mutation, one elite; "
                                "individuals as seed chains, memory of one forward pass")
class DeepGA(Population):
    REFERENCE = ("Such et al., Deep Neuroevolution: Genetic Algorithms Are a Competitive Alternative for "
                 "Training Deep Neural Networks for Reinforcement Learning, arXiv:1712.06567 "
                 "(uber-research/deep-neuroevolution)")
    SEED_LABEL = "deep-ga"
    SMOKE_SETTINGS = {"population": 4, "truncation": 2}
    PARAMS = {
        "sigma": Param(2e-3, float, "mutation power: standard deviation of the Gaussian mutation "
                       "(the paper's Atari value 0.002)", low=0.0),
        "truncation": Param(10, int, "T: parents are drawn uniformly from the top T (truncation "
                            "selection); at most the population", low=1),
        **schedule_params("sigma"),
    }
    # Host bytes per member: its chain (a tuple of shared links, 8 bytes a link per
    # generation of its ancestry on top), fitness arrays, the argsort, parent picks.
    PER_MEMBER_BYTES = 320

    @classmethod
    def check_hparams(cls, hp) -> None:
        if hp["truncation"] > hp["population"]:
            raise UsageError(f"--set truncation={hp['truncation']}: above population={hp['population']}; "
                             f"parents are drawn from the top T of the population (T <= N)")
        super().check_hparams(hp)

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Beyond the weights: the population's chains and fitness (host bytes); the noise and
        the forward are phases, as es's in place (memory_phases)."""
        return {"population": int(cls.PER_MEMBER_BYTES * hp["population"])}

    @classmethod
    def memory_phases(cls, hp: dict, facts) -> dict[str, dict[str, int]]:
        return in_place_phases(facts)

    # -- state ----------------------------------------------------------------------
    def setup(self) -> None:
        self.pert = Perturber(self.problem.trainable())
        self.elite: Chain = ()                    # the chain the weights hold
        self.chains: list[Chain] | None = None    # the last scored generation
        self.fitness: np.ndarray | None = None
        self.elite_index = 0                      # the elite's place in self.chains

    def link(self, step: int, i: int) -> tuple[int, float]:
        return derive_seed(self.seed, self.SEED_LABEL, step, i), float(self.sigma_at(step))

    def generation(self, step: int) -> list[Chain]:
        """The chains of generation `step`, a pure function of the previous one and the seed."""
        n = self.hp["population"]
        if self.chains is None:   # generation 0: theta_0 (the elite) and N-1 mutants of it
            return [()] + [(self.link(step, i),) for i in range(1, n)]
        rng = np.random.default_rng(derive_seed(self.seed, self.SEED_LABEL + "-parents", step))
        return next_generation(self.chains, self.fitness, self.elite_index,
                               self.hp["truncation"], rng, lambda i: self.link(step, i))

    # -- scoring (the population base's hook) -----------------------------------------
    @torch.no_grad()
    def evaluate_members(self, step: int, batch, indices, replay: bool = False) -> list[float]:
        """Fitness of the listed members: weights moved from the elite to the member, scored,
        moved back; replay=True moves there and back for every member in order, scoring
        only the listed ones (so a rank's weights match one process scoring all N)."""
        chains, wanted = self._current, list(indices)
        order = range(len(chains)) if replay else wanted
        scored, scores = set(wanted), {}
        for j in order:
            seeds, coefs = move(self.elite, chains[j])
            self.pert.combine(seeds, coefs)
            try:
                if j in scored:
                    scores[j] = -float(self.problem.loss(batch))
            finally:
                self.pert.combine(seeds[::-1], [-c for c in coefs[::-1]])
        return [scores[j] for j in wanted]

    def step(self, step: int) -> StepResult:
        self._current = self.generation(step)
        fitness = self.gather_fitness(step, self.problem.batch(step))
        n, sigma = len(fitness), self.sigma_at(step)
        ranked = np.nan_to_num(fitness, nan=-np.inf)
        if not np.any(np.isfinite(ranked)):
            return StepResult(loss=float("nan"), evals=n, forwards=n, extra={"sigma": sigma})
        best = int(np.argmax(ranked))             # first maximum: the previous elite wins ties
        self.pert.combine(*move(self.elite, self._current[best]))
        self.elite, self.elite_index = self._current[best], best
        self.chains, self.fitness = self._current, fitness
        finite = fitness[np.isfinite(fitness)]
        return StepResult(loss=float(-fitness[best]), evals=n, forwards=n, extra={
            "sigma": sigma, "mean_member_loss": float(-finite.mean()),
            "elite_reevaluated_loss": float(-fitness[0]), "elite_chain_length": len(self.elite),
            "fitness_std": float(finite.std())})

    def state_dict(self) -> dict:
        return {"elite": list(self.elite), "elite_index": self.elite_index,
                "chains": None if self.chains is None else [list(c) for c in self.chains],
                "fitness": None if self.fitness is None else self.fitness.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.elite = tuple(tuple(link) for link in state["elite"])
        self.elite_index = int(state["elite_index"])
        self.chains = None if state["chains"] is None else [tuple(tuple(link) for link in c)
                                                             for c in state["chains"]]
        self.fitness = None if state["fitness"] is None else np.asarray(state["fitness"], dtype=np.float64)
