"""Qwen3 causal-LM pretraining from random initialisation (weights kind).

The model is transformers' Qwen3ForCausalLM built from a Qwen3Config; nothing
here re-implements a transformer. Fitness (the EA4LLM fitness) of the current
weights on a batch = mean log-probability of the true next token over the
non-pad positions of each sample, averaged over the samples; `loss` returns
its negative. The eval metric is the same quantity on a fixed held-out set
(the first `eval_samples` chunks of the held-out split), with perplexity =
exp(-metric); the next `val_samples` held-out chunks are a validation set
(val_logprob, what `tune` selects on), disjoint from the metric's.

Batch of step k: `samples` train chunks drawn uniformly without replacement
from the generator of (seed, "batch", k), so every optimizer and every
member of an ES iteration sees the same subsample. Forward passes go through
`micro_batch` samples at a time (`micro_batches` gives the weighted pieces
so a gradient optimizer can accumulate). Right padding only ever occurs at
the end of a split's last chunk, so no attention mask is passed (causal
attention never looks right) and the pad positions are masked in the loss.

Sizes (layers/hidden/heads/kv heads/head dim/intermediate/tied):
  tiny   2/64/4/2/16/192/tied, vocab 256   (CPU tests: 50 ES iterations x 30 in ~1 min)
  small  4/128/4/2/32/384/tied, vocab 256  (CPU benchmark)
  3m     4/256/8/4/32/768/tied, vocab 256  (the scaling ladder, 3.21M parameters)
  10m    6/384/12/4/32/1152/tied, vocab 256 (the scaling ladder, 10.4M parameters)
  the EA4LLM paper's table (vocab 151936): 0.5b, 1.7b, 8b, 14b
  the public Qwen3 configs: 0.6b, 4b, 32b
  the paper's 4B / 32B rows as printed: 4b-ea4llm (6.44B), 32b-ea4llm (52.4B)
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from harness.costs import transformer_forward_flops
from harness.errors import UsageError
from harness.params import Param
from harness.problem import WeightsProblem
from harness.registry import register_problem
from harness.seeding import derive_seed
from problems.text_data import corpus_chunks, make_tokenizer

QWEN3_VOCAB = 151936

# name: (layers, hidden, heads, kv_heads, head_dim, intermediate, tied, vocab, source)
SIZES = {
    "tiny": (2, 64, 4, 2, 16, 192, True, 256, "CPU-sized for tests"),
    "small": (4, 128, 4, 2, 32, 384, True, 256, "CPU-sized for the ES overhead benchmark"),
    "3m": (4, 256, 8, 4, 32, 768, True, 256, "CPU-sized rung of the scaling ladder"),
    "10m": (6, 384, 12, 4, 32, 1152, True, 256, "CPU-sized rung of the scaling ladder"),
    "0.5b": (24, 1024, 8, 4, 128, 4096, True, QWEN3_VOCAB, "EA4LLM paper table"),
    "1.7b": (28, 2048, 16, 8, 128, 6144, True, QWEN3_VOCAB, "EA4LLM paper table"),
    "8b": (36, 4096, 32, 8, 128, 12288, False, QWEN3_VOCAB, "EA4LLM paper table"),
    "14b": (40, 5120, 40, 8, 128, 17408, False, QWEN3_VOCAB, "EA4LLM paper table"),
    "0.6b": (28, 1024, 16, 8, 128, 3072, True, QWEN3_VOCAB, "public Qwen3 config"),
    "4b": (36, 2560, 32, 8, 128, 9728, True, QWEN3_VOCAB, "public Qwen3 config"),
    "32b": (64, 5120, 64, 8, 128, 25600, False, QWEN3_VOCAB, "public Qwen3 config"),
    "4b-ea4llm": (36, 4096, 32, 8, 128, 9728, True, QWEN3_VOCAB, "EA4LLM paper's 4B row as printed"),
    "32b-ea4llm": (64, 8192, 64, 8, 128, 25600, False, QWEN3_VOCAB, "EA4LLM paper's 32B row as printed"),
}
CPU_SIZES = ("tiny", "small", "3m", "10m")
# The scaling ladder (studies/reproductions/scaling_gap.py): byte vocabulary, tied, head dim 32 from small
# up, hidden x 2 and x 1.5 per rung, MLP 3 x hidden, as tiny and small. Their defaults keep the sequences
# and samples of tiny (64 tokens x 8) so that one forward stays cheap on a CPU core: measured on the shared
# 2-core machine, one thread, 8 x 64 tokens (docs/scaling.md): 13 ms tiny, 53 ms small, 135 ms 3m,
# 290 ms 10m.
LADDER_PRESETS = {"seq_len": 64, "samples": 8, "micro_batch": 8, "eval_samples": 32, "val_samples": 32}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@lru_cache(maxsize=64)
def _meta_param_count(key: tuple) -> int:
    """The model's parameter count, from transformers' own model built on the meta device,
    remembered in the harness cache per transformers version: building it imports
    transformers' Qwen3 (seconds), which a refused run's "would fit" suggestions over every
    size of the family (and `list`) should not pay each time."""
    from harness.envinfo import _version
    from harness.planner.memo import JsonMemo

    memo, memo_key = JsonMemo("param_counts.json"), f"qwen3|{list(key)}|transformers {_version('transformers')}"
    known = memo.get(memo_key, None)
    if isinstance(known, int):
        return known
    config = _make_config(*key)
    from transformers import Qwen3ForCausalLM

    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())  # tied weights counted once
    memo.put(memo_key, count)
    return count


def _make_config(layers, hidden, heads, kv_heads, head_dim, inter, tied, vocab, max_pos):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, tie_word_embeddings=tied, max_position_embeddings=max_pos,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        attn_implementation="sdpa", use_cache=False,
    )


class Qwen3Pretrain(WeightsProblem):
    REFERENCE = ("Qwen3 (Qwen3 Technical Report, arXiv:2505.09388) through transformers' Qwen3ForCausalLM; "
                 "fitness of EA4LLM")
    PARAMS = {
        "seq_len": Param(64, int, "tokens per sample (chunk length)", low=2),
        "samples": Param(8, int, "evaluation samples per iteration, drawn uniformly from the "
                         "train chunks by the iteration seed", low=1),
        "micro_batch": Param(8, int, "samples per forward pass", low=1),
        "dtype": Param("auto", str, "weights dtype; auto = bfloat16 on CUDA, float32 on CPU",
                       choices=("auto", "float32", "bfloat16", "float16")),
        "data": Param("pydoc", str, "corpus: pydoc (CPython doc topics), a local text file, "
                      "or hf:NAME[:CONFIG]"),
        "tokenizer": Param("bytes", str, "bytes (ids < 256) or a transformers tokenizer path/name"),
        "eval_samples": Param(64, int, "held-out chunks scored by evaluate (the first N)", low=1),
        "val_samples": Param(64, int, "validation chunks: the held-out chunks after the eval_samples ones, "
                             "scored as val_logprob (what `tune` selects on); 0 = none", low=0),
        "eval_micro_batch": Param(None, int, "samples per eval forward (default micro_batch)",
                                  low=1, optional=True),
        "vocab_size": Param(QWEN3_VOCAB, int, "model vocabulary (kept at the configured size "
                            "so memory is faithful; must cover the tokenizer)", low=2),
        "max_positions": Param(40960, int, "max_position_embeddings of the config", low=2),
    }
    METRIC = "heldout_logprob"
    METRIC_HIGHER_IS_BETTER = True
    VALIDATION_KEY = "val_logprob"
    SAMPLE_LOSSES = True
    EVAL_EVERY = 10

    def __init__(self, name, hparams, seed, *, shape: tuple):
        super().__init__(name, hparams, seed)
        self.shape = shape

    # -- configuration, no allocation ------------------------------------------
    def _config_key(self) -> tuple:
        layers, hidden, heads, kv, hd, inter, tied = self.shape
        return (layers, hidden, heads, kv, hd, inter, tied, self.hp["vocab_size"], self.hp["max_positions"])

    def config(self):
        """The Qwen3Config of this problem (nothing allocated)."""
        return _make_config(*self._config_key())

    def meta_model(self) -> torch.nn.Module:
        """The model on the meta device: shapes and dtypes without memory."""
        from transformers import Qwen3ForCausalLM

        with torch.device("meta"):
            model = Qwen3ForCausalLM(self.config())
        return model.to(self.dtype())

    def param_count(self) -> int:
        return _meta_param_count(self._config_key())

    def dtype(self, device: torch.device | None = None) -> torch.dtype:
        name = self.hp["dtype"]
        if name == "auto":
            dev = device if device is not None else self.device
            if device is None and torch.cuda.is_available():
                dev = torch.device("cuda")
            return torch.bfloat16 if dev.type == "cuda" else torch.float32
        return DTYPES[name]

    def check(self) -> None:
        hp = self.hp
        if hp["seq_len"] > hp["max_positions"]:
            raise UsageError(f"--set seq_len={hp['seq_len']}: longer than the model's "
                             f"{hp['max_positions']} positions; use seq_len <= {hp['max_positions']}")
        tok = make_tokenizer(hp["tokenizer"])
        if tok.vocab_size > hp["vocab_size"]:
            raise UsageError(f"--set tokenizer={hp['tokenizer']}: it has {tok.vocab_size} tokens but "
                             f"{self.name} has vocab_size {hp['vocab_size']}; add --set "
                             f"vocab_size={tok.vocab_size} (or larger)")
        train, held = corpus_chunks(hp["data"], hp["tokenizer"], hp["seq_len"])
        if hp["samples"] > len(train):
            raise UsageError(f"--set samples={hp['samples']}: the train split has only {len(train)} "
                             f"chunks of {hp['seq_len']} tokens; use samples <= {len(train)}")

    # -- allocation ------------------------------------------------------------
    def build(self, device) -> None:
        from transformers import Qwen3ForCausalLM

        super().build(device)
        self.check()
        train, held = corpus_chunks(self.hp["data"], self.hp["tokenizer"], self.hp["seq_len"])
        self.train = train
        n_eval = min(self.hp["eval_samples"], len(held))
        self.eval_ids = held.ids[:n_eval].to(device)
        self.eval_mask = held.mask[:n_eval].to(device)
        n_val = min(self.hp["val_samples"], len(held) - n_eval)
        self.val_ids = held.ids[n_eval:n_eval + n_val].to(device)
        self.val_mask = held.mask[n_eval:n_eval + n_val].to(device)
        torch.manual_seed(derive_seed(self.seed, "init"))
        old = torch.get_default_dtype()
        dtype = self.dtype(device)
        try:
            # Allocate directly in the target dtype on the device (no fp32 staging copy).
            torch.set_default_dtype(dtype if dtype.is_floating_point else old)
            with torch.device(device):
                self.model = Qwen3ForCausalLM(self.config())
        finally:
            torch.set_default_dtype(old)
        self.model.eval()  # no dropout; the train/eval switch does not change Qwen3's forward

    def shard_units(self) -> list[torch.nn.Module]:
        return list(self.model.model.layers)   # FSDP: one group per decoder layer

    def batch(self, step: int):
        idx = torch.randperm(len(self.train), generator=self.batch_generator(step))[: self.hp["samples"]]
        return self.train.ids[idx].to(self.device), self.train.mask[idx].to(self.device)

    def batch_tokens(self, batch) -> int:
        return int(batch[0].numel())   # padded positions are computed too

    def matmul_params(self) -> int:
        """Parameters that take part in a matrix multiply: all of them, less the input
        embedding table when untied (a lookup; tied, it is also the LM head, counted once)."""
        layers, hidden, heads, kv, hd, inter, tied = self.shape
        return self.param_count() - (0 if tied else self.hp["vocab_size"] * hidden)

    def forward_flops(self, batch) -> float:
        """harness.costs.transformer_forward_flops: (2 N + 4 L (heads x head_dim) T) per token."""
        layers, hidden, heads, kv, hd, inter, tied = self.shape
        ids = batch[0]
        return transformer_forward_flops(self.matmul_params(), layers, heads * hd,
                                         int(ids.shape[1]), int(ids.numel()))

    def example_batch(self, device):
        """One micro-batch as loss() sees it (for the memory planner): micro_batch samples
        of seq_len tokens, ids and mask."""
        n, t = min(self.hp["micro_batch"], self.hp["samples"]), self.hp["seq_len"]
        return (torch.zeros(n, t, dtype=torch.long, device=device),
                torch.ones(n, t, dtype=torch.long, device=device))

    def micro_batches(self, batch):
        """[(piece, weight)]: pieces of at most micro_batch samples, weights summing to 1."""
        ids, mask = batch
        n, mb = ids.shape[0], self.hp["micro_batch"]
        return [((ids[i:i + mb], mask[i:i + mb]), min(mb, n - i) / n) for i in range(0, n, mb)]

    def sample_logprob(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sample mean next-token log-prob over non-pad targets, shape [batch] (fp32)."""
        logits = self.model(input_ids=ids).logits[:, :-1].float()
        target, tmask = ids[:, 1:], mask[:, 1:].to(logits.dtype)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return (logp * tmask).sum(1) / tmask.sum(1).clamp_min(1.0)

    def sample_losses(self, batch) -> torch.Tensor:
        """-sample_logprob of every row in one forward (no micro-batching: a batched
        population method sizes its forwards itself)."""
        ids, mask = batch
        return -self.sample_logprob(ids, mask)

    def micro_batches_per_step(self) -> int:
        return math.ceil(self.hp["samples"] / self.hp["micro_batch"])

    def loss(self, batch) -> torch.Tensor:
        """Negative fitness: -(mean over samples of the per-sample mean token log-prob)."""
        total = None
        for (ids, mask), weight in self.micro_batches(batch):
            part = -self.sample_logprob(ids, mask).mean() * weight
            total = part if total is None else total + part
        return total

    @torch.no_grad()
    def _mean_logprob(self, ids: torch.Tensor, mask: torch.Tensor) -> float:
        mb = self.hp["eval_micro_batch"] or self.hp["micro_batch"]
        parts = [self.sample_logprob(ids[i:i + mb], mask[i:i + mb]) for i in range(0, ids.shape[0], mb)]
        return float(torch.cat(parts).mean())

    def evaluate(self, solution=None) -> dict[str, float]:
        logprob = self._mean_logprob(self.eval_ids, self.eval_mask)
        out = {"metric": logprob, "heldout_loss": -logprob, "perplexity": math.exp(min(-logprob, 700.0))}
        if self.val_ids.shape[0]:
            out["val_logprob"] = self._mean_logprob(self.val_ids, self.val_mask)
        return out


def _describe(size: str, shape: tuple, vocab: int, source: str) -> str:
    layers, hidden, heads, kv, hd, inter, tied = shape
    return (f"Qwen3 pretraining from scratch, {source}: {layers} layers, hidden {hidden}, "
            f"{heads}/{kv} heads x {hd}, MLP {inter}, vocab {vocab}, "
            f"{'tied' if tied else 'untied'}; metric held-out mean token log-prob")


for _size, (*_shape, _vocab, _source) in SIZES.items():
    _presets = {"vocab_size": _vocab}
    if _size not in CPU_SIZES:  # GPU sizes: longer sequences, smaller micro-batches
        _presets.update(seq_len=512, samples=16, micro_batch=4, eval_samples=32, val_samples=32)
    if _size == "small":
        _presets.update(seq_len=256, samples=16, micro_batch=16, eval_samples=64)
    if _size in ("3m", "10m"):
        _presets.update(LADDER_PRESETS)
    register_problem(f"qwen3-{_size}", Qwen3Pretrain, family="qwen3",
                     description=_describe(_size, tuple(_shape), _vocab, _source),
                     shape=tuple(_shape), **_presets)
