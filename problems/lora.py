"""`lora-<task>`: a frozen base causal LM plus LoRA experts (the GENOME setting).

Weights kind over the LoRA parameters only: `trainable()` lists the adapter's
lora_A/lora_B tensors (peft), the base model is frozen (requires_grad False),
so es/adam/mezo change only the adapter and genome keeps a population of
adapter tensors, never of base models.

Two settings:
  - offline (default): the world of problems/lora_world.py (a small Qwen3
    base pretrained by the harness and `world_experts` peft experts), built
    into the harness cache on first use, or by `python -m harness build-world`;
    the `world_*` settings size it (the tests build a tiny one in seconds);
  - real: `--set base=PATH_OR_NAME --set experts=DIR` loads any causal LM
    (transformers AutoModelForCausalLM) and every PEFT adapter folder under
    DIR (sub-folders holding adapter_config.json, sorted by name); they must
    share one LoRA config. The tokenizer is then the base's (AutoTokenizer)
    unless `tokenizer=` names another.

Fitness data and metric: each task has `n_val` validation samples (fitness:
genome, baselines, and the batches es/adam see) and a disjoint test split of
`n_test` (the eval metric, never seen by an optimizer). Accuracy = exact match
of the whole answer (every answer token is the greedy argmax); multi-task =
mean over tasks. `loss(batch)` = cross-entropy of the answer tokens of a
subsample of the val samples (what gradient and ES optimizers minimise).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UsageError
from harness.params import Param
from harness.problem import ExpertsProblem
from harness.registry import register_problem
from problems.lora_tasks import TASKS, parse_tasks, splits


@dataclass
class Ensemble:
    """A solution that is several adapters voting (GENOME+ ensemble), best first."""

    adapters: list  # each a list of tensors in trainable() order


def majority_vote(answers_per_model: list[list[str]]) -> list[str]:
    """Per sample, the answer most models gave; a tie goes to the answer of the
    earliest model among the tied ones (models are passed best first)."""
    out = []
    for column in zip(*answers_per_model):
        counts = Counter(column)
        top = max(counts.values())
        out.append(next(a for a in column if counts[a] == top))
    return out


def adapter_dirs(path: str) -> list[Path]:
    root = Path(path).expanduser()
    if (root / "adapter_config.json").exists():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "adapter_config.json").exists()) if root.is_dir() else []


class LoraTasks(ExpertsProblem):
    REFERENCE = "the GENOME setting (arXiv 2503.01155): LoRA (Hu et al., arXiv:2106.09685) experts through peft"
    # a world of 3 experts, each trained 3 steps, built in seconds
    SMOKE_SETTINGS = {"world_experts": 3, "world_expert_steps": 3, "world_pretrain_steps": 3, "world_hidden": 32,
                      "world_layers": 1, "n_val": 20, "n_test": 20, "samples": 8}
    PARAMS = {
        "tasks": Param("add", str, "comma-separated tasks; fitness = mean accuracy over them "
                       f"(valid: {', '.join(TASKS)})"),
        "base": Param("", str, "base causal LM: a local folder or hub name; empty = the offline "
                      "world's Qwen3 base"),
        "experts": Param("", str, "folder of PEFT adapter folders; empty = the offline world's experts"),
        "tokenizer": Param("auto", str, "auto (bytes offline, the base's with base=), bytes, "
                           "or a transformers tokenizer path/name"),
        "n_val": Param(200, int, "validation samples per task (fitness)", low=1),
        "n_test": Param(200, int, "test samples per task (the reported metric)", low=1),
        "data_seed": Param(0, int, "seed of the task samples (fixed across runs and optimizers)"),
        "samples": Param(64, int, "val samples per batch(step) for es/adam/mezo", low=1),
        "world_seed": Param(0, int, "offline world: seed of base pretraining and experts"),
        "world_layers": Param(2, int, "offline world: base layers", low=1),
        "world_hidden": Param(64, int, "offline world: base hidden size (multiple of 4)", low=4),
        "world_pretrain_steps": Param(150, int, "offline world: Adam steps of base pretraining", low=0),
        "world_experts": Param(10, int, "offline world: number of LoRA experts", low=1),
        "world_expert_steps": Param(100, int, "offline world: Adam steps per expert", low=0),
        "world_lora_r": Param(4, int, "offline world: LoRA rank", low=1),
    }
    METRIC = "test_accuracy"
    METRIC_HIGHER_IS_BETTER = True
    EVAL_EVERY = 1

    # -- configuration --------------------------------------------------------
    def task_names(self) -> tuple[str, ...]:
        return parse_tasks(self.hp["tasks"])

    def real(self) -> bool:
        return bool(self.hp["base"])

    def world_spec(self):
        from problems.lora_world import WorldSpec

        hp = self.hp
        return WorldSpec(seed=hp["world_seed"], layers=hp["world_layers"], hidden=hp["world_hidden"],
                         intermediate=3 * hp["world_hidden"], pretrain_steps=hp["world_pretrain_steps"],
                         experts=hp["world_experts"], expert_steps=hp["world_expert_steps"],
                         lora_r=hp["world_lora_r"])

    def check(self) -> None:
        hp = self.hp
        self.task_names()
        if bool(hp["base"]) != bool(hp["experts"]):
            raise UsageError("--set base= and --set experts= go together: give both (a base model and "
                             "a folder of its PEFT adapters) or neither (the offline world)")
        if hp["experts"] and not adapter_dirs(hp["experts"]):
            raise UsageError(f"--set experts={hp['experts']}: no PEFT adapter folder there (expected "
                             "sub-folders with adapter_config.json)")
        if not hp["base"] and hp["world_hidden"] % 4:
            raise UsageError(f"--set world_hidden={hp['world_hidden']}: must be a multiple of 4 (heads)")
        if hp["samples"] > hp["n_val"] * len(self.task_names()):
            raise UsageError(f"--set samples={hp['samples']}: only {hp['n_val'] * len(self.task_names())} "
                             "val samples exist; use samples <= n_val x tasks")

    def tokenizer(self):
        from problems.text_data import make_tokenizer

        name = self.hp["tokenizer"]
        if name == "auto":
            name = self.hp["base"] or "bytes"
        return make_tokenizer(name)

    # -- models ----------------------------------------------------------------
    def _paths(self) -> tuple[str, list[Path]]:
        if self.real():
            return self.hp["base"], adapter_dirs(self.hp["experts"])
        from problems.lora_world import build_world

        world = build_world(self.world_spec())
        return str(world / "base"), adapter_dirs(str(world / "experts"))

    def _lora_config(self, expert_dirs):
        from peft import LoraConfig

        configs = [LoraConfig.from_pretrained(str(d)) for d in expert_dirs]
        first = configs[0]
        for d, c in zip(expert_dirs, configs):
            if (c.r, sorted(c.target_modules), c.lora_alpha) != (first.r, sorted(first.target_modules),
                                                                 first.lora_alpha):
                raise UsageError(f"--set experts: {d.name} has a different LoRA config (r, alpha, target "
                                 f"modules) from {expert_dirs[0].name}; all experts must share one")
        first.inference_mode = False
        return first

    def build(self, device) -> None:
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        super().build(device)
        self.check()
        base_path, self.expert_dirs = self._paths()
        try:
            base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        except Exception as exc:
            raise UsageError(f"--set base={base_path}: transformers could not load it "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        for p in base.parameters():
            p.requires_grad_(False)
        self.model = get_peft_model(base, self._lora_config(self.expert_dirs)).to(device)
        self.model.eval()
        tok = self.tokenizer()
        self._encode(tok)

    def _encode(self, tok) -> None:
        from problems.lora_world import encode_pairs

        self.tok = tok
        self.data = {}
        for split in ("val", "test"):
            per_task = {}
            for t in self.task_names():
                val, test = splits(t, self.hp["data_seed"], self.hp["n_val"], self.hp["n_test"])
                s = val if split == "val" else test
                pairs = list(zip(s.prompts, s.answers))
                per_task[t] = (pairs, *encode_pairs(pairs, tok, self.device))
            self.data[split] = per_task
        # the pool batch(step) draws from: every task's val samples, one padded tensor
        pool = [p for t in self.task_names() for p in self.data["val"][t][0]]
        self.pool = encode_pairs(pool, tok, self.device)

    # -- adapters ----------------------------------------------------------------
    def get_adapter(self) -> list[torch.Tensor]:
        return [p.detach().clone() for _, p in self.trainable()]

    @torch.no_grad()
    def set_adapter(self, tensors) -> None:
        for (_, p), t in zip(self.trainable(), tensors):
            p.copy_(t)

    def expert_adapters(self) -> list[list[torch.Tensor]]:
        """Every expert's adapter as tensors in trainable() order (read from disk on
        demand, so the problem holds no population itself). Current weights kept."""
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        keep = self.get_adapter()
        out = []
        for d in self.expert_dirs:
            sd = load_peft_weights(str(d), device=str(self.device))
            result = set_peft_model_state_dict(self.model, sd)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if missing:
                raise UsageError(f"--set experts: {d.name} does not fit the base model "
                                 f"(missing {missing[0]})")
            out.append(self.get_adapter())
        self.set_adapter(keep)
        return out

    # -- fitness and metric ------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, split: str = "val") -> float:
        """Mean over tasks of exact-match accuracy of the current adapter."""
        from problems.lora_world import exact_match

        return self.per_task_accuracy(split, exact_match)[0]

    @torch.no_grad()
    def sample_scores(self, split: str = "val") -> torch.Tensor:
        from problems.lora_world import exact_match

        return torch.cat([exact_match(self.model, ids, mask).float().cpu()
                          for _, ids, mask in self.data[split].values()])

    @torch.no_grad()
    def per_task_accuracy(self, split: str, fn=None) -> tuple[float, dict[str, float]]:
        from problems.lora_world import exact_match

        fn = fn or exact_match
        accs = {t: float(fn(self.model, ids, mask).float().mean())
                for t, (_, ids, mask) in self.data[split].items()}
        return sum(accs.values()) / len(accs), accs

    @torch.no_grad()
    def greedy_answers(self, split: str) -> dict[str, list[str]]:
        """Greedy decoding of each sample's answer (as many tokens as the true answer),
        grouped by prompt/answer token lengths so no padding enters the model."""
        out = {}
        for t, (pairs, _, _) in self.data[split].items():
            enc = [(self.tok.encode(p), len(self.tok.encode(a))) for p, a in pairs]
            answers: list[str] = [""] * len(pairs)
            groups: dict[tuple[int, int], list[int]] = {}
            for i, (p, n) in enumerate(enc):
                groups.setdefault((len(p), n), []).append(i)
            for (_, n), idx in groups.items():
                ids = torch.tensor([enc[i][0] for i in idx], device=self.device)
                for _ in range(n):
                    nxt = self.model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
                    ids = torch.cat([ids, nxt], 1)
                for row, i in enumerate(idx):
                    answers[i] = self.tok.decode(ids[row, -n:].tolist())
            out[t] = answers
        return out

    def vote_accuracy(self, adapters, split: str) -> tuple[float, dict[str, float]]:
        """Accuracy of the majority vote of `adapters` (best first). Current weights kept."""
        keep = self.get_adapter()
        per_model = []
        try:
            for a in adapters:
                self.set_adapter(a)
                per_model.append(self.greedy_answers(split))
        finally:
            self.set_adapter(keep)
        accs = {}
        for t, (pairs, _, _) in self.data[split].items():
            voted = majority_vote([m[t] for m in per_model])
            accs[t] = sum(v == a for v, (_, a) in zip(voted, pairs)) / len(pairs)
        return sum(accs.values()) / len(accs), accs

    def evaluate(self, solution=None) -> dict[str, float]:
        if isinstance(solution, Ensemble):
            test, per = self.vote_accuracy(solution.adapters, "test")
            val, _ = self.vote_accuracy(solution.adapters, "val")
        else:
            test, per = self.per_task_accuracy("test")
            val = self.accuracy("val")
        out = {"metric": test, "val_accuracy": val}
        if len(per) > 1:
            out.update({f"test_accuracy_{t}": a for t, a in per.items()})
        return out

    # -- weights-kind interface (es, adam, mezo) ---------------------------------
    def batch(self, step: int):
        ids, mask = self.pool
        idx = torch.randperm(ids.shape[0], generator=self.batch_generator(step))[: self.hp["samples"]]
        idx = idx.to(self.device)
        return ids[idx], mask[idx]

    def loss(self, batch) -> torch.Tensor:
        from problems.lora_world import token_loss

        return token_loss(self.model, *batch)

    def example_batch(self, device):
        width = 16
        return (torch.zeros(self.hp["samples"], width, dtype=torch.long, device=device),
                torch.ones(self.hp["samples"], width, dtype=torch.bool, device=device))

    def meta_model(self):
        """Base + LoRA on the meta device (offline world or the base's config)."""
        from peft import get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM

        if self.real():
            config = AutoConfig.from_pretrained(self.hp["base"])
            lcfg = self._lora_config(adapter_dirs(self.hp["experts"]))
        else:
            from problems.lora_world import lora_config, qwen3_config

            config, lcfg = qwen3_config(self.world_spec()), lora_config(self.world_spec())
        with torch.device("meta"):
            base = AutoModelForCausalLM.from_config(config)
        for p in base.parameters():
            p.requires_grad_(False)
        with torch.device("meta"):
            return get_peft_model(base, lcfg)

    def param_count(self):
        if self.model is not None:
            return super().param_count()
        if self.real():
            return None
        try:
            return sum(p.numel() for p in self.meta_model().parameters())
        except Exception:  # list must never fail on a count
            return None


for _task, _t in TASKS.items():
    register_problem(f"lora-{_task}", LoraTasks, family="lora", tasks=_task,
                     description=f"GENOME setting: frozen base + LoRA experts, task {_task} "
                                 f"({_t.description}); metric test exact-match accuracy")
register_problem("lora-heldout", LoraTasks, family="lora", tasks="count,max,pattern",
                 description="GENOME multi-task: count, max, pattern together (the held-out tasks of "
                             "the offline world); fitness mean val accuracy, metric mean test accuracy")
