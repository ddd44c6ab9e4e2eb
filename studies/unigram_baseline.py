"""The held-out log-prob of a byte-frequency model: the level a language model reaches by
learning unigram statistics alone, a yardstick for the qwen3 problems' heldout_logprob.

    python -m studies.unigram_baseline [--data pydoc] [--seq-len 64] [--eval-samples 32]

Counts the training chunks' bytes (add-0.5 smoothing) and scores the next-token positions
of the first `eval-samples` held-out chunks, as the problems' metric does (nats per token).
"""

from __future__ import annotations

import argparse

import torch

from problems.text_data import corpus_chunks


def unigram_heldout_logprob(data: str = "pydoc", seq_len: int = 64, eval_samples: int = 32) -> float:
    train, heldout = corpus_chunks(data, "bytes", seq_len)
    counts = torch.bincount(train.ids[train.mask.bool()], minlength=256).double() + 0.5
    logp = (counts / counts.sum()).log()
    ids, mask = heldout.ids[:eval_samples], heldout.mask[:eval_samples].bool()
    return float(logp[ids[:, 1:][mask[:, 1:]]].mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="pydoc")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-samples", type=int, default=32)
    a = p.parse_args(argv)
    print(f"byte-frequency heldout_logprob: {unigram_heldout_logprob(a.data, a.seq_len, a.eval_samples):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
