"""The offline GENOME world: a small Qwen3 base model and LoRA experts, built here.

The paper evolves 10 LoRA experts of gemma-2-2b-it; offline, with no hub, the
harness builds a world of the same shape:

  1. base: transformers' Qwen3ForCausalLM from a Qwen3Config (byte vocabulary),
     pretrained briefly with Adam on the default corpus (problems/text_data.py,
     CPython doc topics) interleaved with task text of every task
     (problems/lora_tasks.py), so it knows the formats but solves little;
  2. experts: `experts` LoRA adapters (peft), each fine-tuned with Adam on the
     frozen base on its own task mixture: expert e's primary task (weight
     0.6) is one of the non-held-out tasks, round-robin, and its secondary
     (0.4) one of the held-out tasks, round-robin. So a held-out task (the
     ones the GENOME benchmark evolves for, `held_out`) is no expert's main
     skill: each of several experts knows a part of it, none solves it alone,
     as in the paper, where no parent LLM masters the new tasks.

Everything is a pure function of the world seed and sizes: the same spec
builds bit-identical tensors. The world is saved as ordinary folders, base/
(save_pretrained) and experts/expert_NN/ (peft save_pretrained), plus
world.json (the spec, the mixtures, each expert's val accuracy), under the
harness cache dir (HARNESS_CACHE_DIR): so `--set base=.../base --set
experts=.../experts` loads it like any real model and adapter folder.
`python -m harness build-world [--seed S]` rebuilds it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from harness.seeding import derive_seed
from problems.lora_tasks import TASKS, TASKS_VERSION, splits, train_stream

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 192
    pretrain_steps: int = 150
    pretrain_lr: float = 3e-3
    experts: int = 10
    expert_steps: int = 100
    expert_lr: float = 1e-2
    lora_r: int = 4
    batch: int = 64
    seq_len: int = 32
    data: str = "pydoc"
    data_seed: int = 0
    tasks: tuple[str, ...] = field(default_factory=lambda: tuple(TASKS))
    held_out: tuple[str, ...] = ("count", "max", "pattern")

    def key(self) -> str:
        text = json.dumps({**asdict(self), "tasks_version": TASKS_VERSION}, sort_keys=True)
        return f"seed{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def world_dir(spec: WorldSpec) -> Path:
    from harness.cache import cache_dir

    return cache_dir("lora-world") / spec.key()


def qwen3_config(spec: WorldSpec):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=256, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, head_dim=spec.hidden // spec.heads,
        tie_word_embeddings=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        attn_implementation="sdpa", use_cache=False,
    )


def lora_config(spec: WorldSpec):
    from peft import LoraConfig

    return LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, lora_dropout=0.0,
                      target_modules=list(LORA_TARGETS), bias="none", task_type="CAUSAL_LM")


def mixtures(spec: WorldSpec) -> list[dict[str, float]]:
    """Expert e: primary = the e-th non-held-out task (0.6), secondary = a held-out task
    (0.4); both orders are shuffled by the world seed, so pairings differ between seeds."""
    g = torch.Generator().manual_seed(derive_seed(spec.seed, "mixtures"))
    main = [t for t in spec.tasks if t not in spec.held_out] or list(spec.tasks)
    held = [t for t in spec.held_out if t in spec.tasks] or list(spec.tasks)
    main = [main[i] for i in torch.randperm(len(main), generator=g).tolist()]
    held = [held[i] for i in torch.randperm(len(held), generator=g).tolist()]
    out = []
    for e in range(spec.experts):
        a, b = main[e % len(main)], held[e % len(held)]
        out.append({a: 0.6, b: 0.4} if a != b else {a: 1.0})
    return out


def encode_pairs(pairs, tok, device="cpu", answer_only=True):
    """(ids [n, T], target mask [n, T]) right-padded with pad id; target mask marks the
    tokens a loss or an exact match is taken on (the answer's, or all with
    answer_only=False). Right padding needs no attention mask under causal attention."""
    seqs, marks = [], []
    for prompt, answer in pairs:
        p, a = tok.encode(prompt), tok.encode(answer)
        seqs.append(p + a)
        marks.append([0] * len(p) + [1] * len(a) if answer_only else [0] + [1] * (len(p) + len(a) - 1))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, marks)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids.to(device), mask.to(device)


def token_loss(model, ids, mask):
    """Mean cross-entropy of the marked tokens (each predicted from its prefix)."""
    logits = model(input_ids=ids).logits[:, :-1].float()
    target, m = ids[:, 1:], mask[:, 1:].to(logits.dtype)
    # masked mean, not boolean indexing: no data-dependent shapes (the planner traces on meta)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return (ce * m).sum() / m.sum().clamp_min(1.0)


@torch.no_grad()
def exact_match(model, ids, mask) -> torch.Tensor:
    """Per sample: every marked token is the argmax given the true prefix. For a fixed
    answer length this is exactly "greedy decoding reproduces the answer"."""
    pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
    ok = (pred == ids[:, 1:]) | ~mask[:, 1:]
    return ok.all(1)


def _task_batches(spec, tok, mixture: dict[str, float], steps: int, stream: str):
    """Batches of task text for `steps` steps: each step's samples split between the
    mixture's tasks by weight, drawn from the train streams (never val/test prompts)."""
    names = list(mixture)
    counts = [max(1, round(spec.batch * mixture[n])) for n in names]
    pools = {n: train_stream(n, spec.data_seed, c * steps, derive_seed(spec.seed, stream))
             for n, c in zip(names, counts)}
    for k in range(steps):
        pairs = []
        for n, c in zip(names, counts):
            pairs += pools[n][k * c:(k + 1) * c]
        yield pairs


def pretrain_base(spec: WorldSpec, log=print):
    """Qwen3 base: Adam on corpus chunks and task text, alternating steps."""
    from transformers import Qwen3ForCausalLM

    from problems.text_data import corpus_chunks, make_tokenizer

    tok = make_tokenizer("bytes")
    torch.manual_seed(derive_seed(spec.seed, "base-init"))
    model = Qwen3ForCausalLM(qwen3_config(spec))
    train, _ = corpus_chunks(spec.data, "bytes", spec.seq_len)
    opt = torch.optim.Adam(model.parameters(), lr=spec.pretrain_lr)
    g = torch.Generator().manual_seed(derive_seed(spec.seed, "base-batches"))
    uniform = {t: 1.0 / len(spec.tasks) for t in spec.tasks}
    task_text = _task_batches(spec, tok, uniform, spec.pretrain_steps, "base")
    model.train()
    for step in range(spec.pretrain_steps):
        pairs = next(task_text)
        if step % 2 == 0:
            idx = torch.randint(len(train), (spec.batch,), generator=g)
            ids, mask = train.ids[idx], train.mask[idx].bool()
        else:
            ids, mask = encode_pairs(pairs, tok, answer_only=False)
        loss = token_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == spec.pretrain_steps - 1:
            log(f"  base step {step}: loss {loss.item():.3f}")
    model.eval()
    return model


def train_expert(spec: WorldSpec, base, index: int, mixture: dict[str, float], log=print):
    """One LoRA expert on a private copy of the frozen base; returns the peft model."""
    from peft import get_peft_model

    from problems.text_data import make_tokenizer

    tok = make_tokenizer("bytes")
    torch.manual_seed(derive_seed(spec.seed, "expert-init", index))
    model = get_peft_model(copy.deepcopy(base), lora_config(spec))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.expert_lr)
    model.train()
    for pairs in _task_batches(spec, tok, mixture, spec.expert_steps, f"expert{index}"):
        ids, mask = encode_pairs(pairs, tok)
        loss = token_loss(model, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


def val_accuracy(model, tasks, data_seed: int) -> dict[str, float]:
    from problems.text_data import make_tokenizer

    tok = make_tokenizer("bytes")
    out = {}
    for t in tasks:
        val, _ = splits(t, data_seed)
        ids, mask = encode_pairs(list(zip(val.prompts, val.answers)), tok)
        out[t] = round(float(exact_match(model, ids, mask).float().mean()), 4)
    return out


SPECIALIST_MARGIN = 0.05   # val accuracy by which a task's own experts must beat all others


def specialist_findings(info: dict) -> list[str]:
    """What keeps a world's experts from being real specialists, one line each (empty: none):
    a task whose best own expert (trained on it) is not ahead of every expert not trained on it
    by SPECIALIST_MARGIN, and a degenerate task on which every expert scores the same."""
    out = []
    experts = info["experts"]
    for task in experts[0]["val_accuracy"]:
        accs = [e["val_accuracy"][task] for e in experts]
        own = [a for e, a in zip(experts, accs) if task in e["mixture"]]
        other = [a for e, a in zip(experts, accs) if task not in e["mixture"]]
        if len(set(accs)) == 1:
            out.append(f"{task}: degenerate, every expert scores {accs[0]:.2f}")
        elif own and other and max(own) < max(other) + SPECIALIST_MARGIN:
            out.append(f"{task}: its own experts (best {max(own):.2f}) not clearly ahead of the others "
                       f"(best {max(other):.2f})")
    return out


def build_world(spec: WorldSpec, force: bool = False, log=None) -> Path:
    """Build (or find) the world of `spec`; returns its folder. Written to a temporary
    folder and renamed, so a killed build leaves nothing that looks finished; when two
    processes build one world at once, the first to finish wins and the other keeps its
    world (a world is a pure function of its spec). The specialist check's findings are
    logged and stored in world.json ("specialist_findings")."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    final = world_dir(spec)
    if (final / "world.json").exists() and not force:
        return final
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        log(f"building the LoRA world {final.name} (base pretraining, {spec.experts} experts)")
        base = pretrain_base(spec, log)
        base.save_pretrained(tmp / "base")
        for p in base.parameters():
            p.requires_grad_(False)
        info = {"spec": asdict(spec), "base_val_accuracy": val_accuracy(base, spec.tasks, spec.data_seed),
                "experts": []}
        for e, mix in enumerate(mixtures(spec)):
            model = train_expert(spec, base, e, mix, log)
            name = f"expert_{e:02d}"
            model.save_pretrained(tmp / "experts" / name)
            acc = val_accuracy(model, spec.tasks, spec.data_seed)
            info["experts"].append({"name": name, "mixture": mix, "val_accuracy": acc})
            log(f"  {name} {mix}: val accuracy " + " ".join(f"{k}={v:.2f}" for k, v in acc.items()))
        info["specialist_findings"] = specialist_findings(info)
        for line in info["specialist_findings"]:
            log(f"  warning: not a specialist world: {line}")
        (tmp / "world.json").write_text(json.dumps(info, indent=1))
        if (final / "world.json").exists() and not force:   # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        if final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:   # a directory appeared there meanwhile: keep it if it is finished
            if not (final / "world.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
