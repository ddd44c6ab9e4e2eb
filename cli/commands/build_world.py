"""`build-world`: (re)build the offline GENOME world (Qwen3 base + LoRA experts)."""

from __future__ import annotations

import json

NAME = "build-world"
HELP = "rebuild the offline LoRA world of the lora-* problems (base pretraining + experts) in the cache"


def add_arguments(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="world seed (the problems' world_seed)")
    p.add_argument("--experts", type=int, default=None, help="number of LoRA experts (default 10)")
    p.add_argument("--expert-steps", type=int, default=None, help="Adam steps per expert")
    p.add_argument("--pretrain-steps", type=int, default=None, help="Adam steps of base pretraining")
    p.add_argument("--hidden", type=int, default=None, help="base hidden size (multiple of 4)")
    p.add_argument("--layers", type=int, default=None, help="base layers")
    p.add_argument("--lora-r", type=int, default=None, help="LoRA rank")
    p.add_argument("--if-missing", action="store_true", help="keep an existing world of this spec")


def main(args) -> int:
    from harness import registry

    # Same validation and sizes as the problems' world_* settings.
    overrides = {f"world_{k}": str(v) for k, v in (
        ("seed", args.seed), ("experts", args.experts), ("expert_steps", args.expert_steps),
        ("pretrain_steps", args.pretrain_steps), ("hidden", args.hidden), ("layers", args.layers),
        ("lora_r", args.lora_r)) if v is not None}
    problem = registry.problem("lora-add").create(overrides, owner="build-world")
    problem.check()
    from problems.lora_world import build_world

    path = build_world(problem.world_spec(), force=not args.if_missing)
    info = json.loads((path / "world.json").read_text())
    print(f"world: {path}")
    print(f"  base:    {path / 'base'}  (val accuracy {info['base_val_accuracy']})")
    for e in info["experts"]:
        acc = " ".join(f"{k}={v:.2f}" for k, v in e["val_accuracy"].items())
        print(f"  {e['name']}: {e['mixture']}  val {acc}")
    return 0
