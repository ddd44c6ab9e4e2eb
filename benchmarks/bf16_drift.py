"""How far perturb/restore drifts bf16 weights (run on demand, not in CI).

Builds a Qwen3 problem in bfloat16, applies N perturb/restore cycles with
noise scale sigma the way es does (w + sigma*eps computed in fp32, rounded once;
restore likewise), and reports the fraction of elements that are not
bit-identical to the original afterwards and the largest relative change. For
comparison it does the same with a naive restore in bf16 arithmetic
(w_p - bf16(sigma*eps)).

    python benchmarks/bf16_drift.py --problem qwen3-tiny --members 30 --sigma 0.01
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

import torch  # noqa: E402

from harness import registry
from harness.seeding import derive_seed
from optimizers._perturb import Perturber, tensor_noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="qwen3-tiny")
    ap.add_argument("--members", type=int, default=30)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    prob = registry.problem(args.problem).create({"dtype": "bfloat16"})
    prob.build(torch.device(args.device))
    params = prob.trainable()
    original = [p.detach().clone() for _, p in params]
    total = sum(p.numel() for p in original)
    for mode in ("fp32-rounded (harness)", "naive bf16"):
        with torch.no_grad():
            for p, o in zip((p for _, p in params), original):
                p.copy_(o)
            pert = Perturber(params)
            for j in range(args.members):
                seed = derive_seed(0, "drift", j)
                pert.add(seed, args.sigma)
                if mode.startswith("naive"):
                    for i, (_, p) in enumerate(params):
                        p.sub_((args.sigma * tensor_noise(seed, i, p)).to(p.dtype))
                else:
                    pert.add(seed, -args.sigma)
        changed, worst, sq_diff, sq_w = 0, 0.0, 0.0, 0.0
        for (_, p), o in zip(params, original):
            diff = p.detach().float() - o.float()
            changed += int((diff != 0).sum())
            sq_diff += float((diff ** 2).sum())
            sq_w += float((o.float() ** 2).sum())
            rel = diff.abs() / o.float().abs().clamp_min(1e-12)
            worst = max(worst, float(rel[diff != 0].max()) if (diff != 0).any() else 0.0)
        print(f"{mode:24s} after {args.members} perturb/restore cycles, sigma={args.sigma}: "
              f"{changed / total:.2%} of {total} elements changed, ||drift||/||w|| = "
              f"{(sq_diff / sq_w) ** 0.5:.3g}, max relative change {worst:.3g}")


if __name__ == "__main__":
    main()
