"""Cost axes shared by every optimizer: forward-pass equivalents, tokens, FLOPs, MFU.

Per step the optimizer reports `StepResult.forwards` (forward-pass equivalents on
the step's batch, a backward counting 2: ES with population N -> N, MeZO -> 2,
Adam -> 3) and the problem declares what one forward of that step costs
(`Problem.step_cost(step)`: tokens of the step's batch and FLOPs of one forward
over it). The runner accumulates

    forwards += StepResult.forwards
    tokens   += tokens of the step's batch      (data consumed, once per step)
    flops    += StepResult.forwards * FLOPs of one forward over the batch

and, on CUDA, mfu = flops / optimizer seconds / the device's peak dense bf16 rate.
Evaluation of the metric is never counted, as optimizer time excludes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepCost:
    tokens: int | None = None              # tokens in the step's batch (token problems)
    flops_per_forward: float | None = None  # FLOPs of one forward over the batch


def transformer_forward_flops(n_params: int, layers: int, attn_width: int, seq_len: int,
                              tokens: int) -> float:
    """FLOPs of one forward of a decoder over `tokens` tokens in sequences of `seq_len`.

    The estimate of nanoGPT's `estimate_mfu` (Karpathy, model.py; PaLM, Chowdhery et
    al. 2022, appendix B), which counts forward + backward as
        6 N + 12 L H Q T  per token,
    of which the forward is one third:
        2 N + 4 L (H Q) T  per token
    N: parameters that take part in a matrix multiply, L: layers, H Q = heads x
    head_dim (the width of the attention scores and values), T: sequence length.
    A backward costs twice the forward, which is why a backward counts 2 forwards.
    Like nanoGPT, the attention term ignores the causal mask (full T x T scores)
    and norms, softmax and the loss are not counted.
    """
    per_token = 2.0 * n_params + 4.0 * layers * attn_width * seq_len
    return per_token * tokens


# Peak dense (no sparsity) bf16 tensor-core FLOP/s from NVIDIA's data sheets,
# matched on a substring of torch.cuda.get_device_name() (most specific first).
PEAK_BF16_FLOPS = [
    ("H200", 989e12),          # H200 SXM data sheet: 1,979 TFLOPS with sparsity
    ("H100 PCIe", 756e12),     # H100 PCIe: 1,513 with sparsity
    ("H100", 989e12),          # H100 SXM: 1,979 with sparsity
    ("A100", 312e12),          # A100 data sheet: 312 dense
    ("L40S", 362e12),          # L40S: 733 with sparsity
    ("L4", 121e12),            # L4: 242 with sparsity
    ("A10G", 70e12),           # AWS A10G (g5): 70 dense (NVIDIA via AWS)
    ("A10", 125e12),           # A10 data sheet: 125 dense
]


def peak_bf16_flops(device: torch.device) -> float | None:
    """The device's peak dense bf16 FLOP/s, or None (not CUDA, or not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_FLOPS:
        if key in name:
            return peak
    return None
