"""Text corpora, tokenizers and fixed-length chunks for language-model problems.

Problem-agnostic: any problem that needs token sequences (Qwen3 pretraining,
LoRA tasks) uses `load_documents`, `make_tokenizer` and `chunk_tokens`.

Corpus sources (the `data` setting):
  - `pydoc` (default): the CPython documentation topics (`pydoc_data.topics`),
    which every Python install carries: topics in sorted order, documents are
    their paragraphs (blank-line separated; whole topics would hold out a
    lopsided 2% since a few topics are huge). Nothing is downloaded.
  - a local text file PATH: documents are paragraphs separated by blank lines.
  - `hf:NAME[:CONFIG]`: a Hugging Face dataset through `datasets` (online only),
    one document per row of its `text` column (train split).

Split rule (fixed, independent of any seed): document i (in source order) is
held out when i % 10 == 9; the rest is train. A source with fewer than 10
documents is split by characters instead: the last 10% is held out.

Tokenizers (the `tokenizer` setting): `bytes` (default) maps text to its UTF-8
bytes, ids 0..255; anything else is a path or name for transformers'
AutoTokenizer. Each split is one token stream (documents joined by a blank
line) cut into chunks of `seq_len` tokens; the last partial chunk is padded
with pad id 0 and its padding is masked out (mask 0).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from harness.errors import UsageError

HELDOUT_EVERY = 10          # document i is held out when i % 10 == 9
DOC_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Corpus:
    source: str
    train: str
    heldout: str


def _pydoc_documents() -> list[str]:
    from pydoc_data.topics import topics

    return _paragraphs(DOC_SEPARATOR.join(topics[k] for k in sorted(topics)))


def _paragraphs(text: str) -> list[str]:
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def _file_documents(path: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--set data={path}: no such file; give a readable local text file, "
                         "'pydoc' or hf:NAME[:CONFIG]")
    data = p.read_bytes()
    try:
        if b"\0" in data:   # NUL bytes: a binary file, not text
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--set data={path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); "
                         "give a text file, 'pydoc' or hf:NAME[:CONFIG]") from None
    return _paragraphs(text)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within seconds (False when
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE already say not to ask it)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
           for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


@contextmanager
def _offline(offline: bool):
    """datasets and huggingface_hub in offline mode (HF_HUB_OFFLINE's effect) while inside;
    their module flags are read at call time, and put back after."""
    if not offline:
        yield
        return
    import datasets
    import huggingface_hub.constants as hub

    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
             (hub, "HF_HUB_OFFLINE")]
    saved = [getattr(obj, name, None) for obj, name in flags]
    for obj, name in flags:
        setattr(obj, name, True)
    try:
        yield
    finally:
        for (obj, name), value in zip(flags, saved):
            setattr(obj, name, value)


def _hf_documents(spec: str) -> list[str]:
    name, _, config = spec[3:].partition(":")
    if not name:
        raise UsageError(f"--set data={spec}: expected hf:NAME or hf:NAME:CONFIG")
    online = _hub_reachable()
    try:
        import datasets

        with _offline(not online):   # the local cache only: no request, no minute of retries
            ds = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:  # offline, unknown name, no train split: one line
        if not online:
            raise UsageError(f"--set data={spec}: not in the local datasets cache, and the Hub cannot be "
                             "reached from here (no network); load it once where there is network "
                             "(datasets caches it), or give a text file") from None
        raise UsageError(f"--set data={spec}: could not load the dataset through `datasets` "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if "text" not in ds.column_names:
        raise UsageError(f"--set data={spec}: the dataset has no 'text' column "
                         f"(columns: {', '.join(ds.column_names)})")
    return [t for t in ds["text"] if t and t.strip()]


@lru_cache(maxsize=8)
def load_corpus(data: str = "pydoc") -> Corpus:
    """The train and held-out text of a source, split by the fixed rule above."""
    if data == "pydoc":
        docs = _pydoc_documents()
    elif data.startswith("hf:"):
        docs = _hf_documents(data)
    else:
        docs = _file_documents(data)
    if not docs or not any(d.strip() for d in docs):
        raise UsageError(f"--set data={data}: the corpus is empty; give a text file with content")
    if len(docs) >= HELDOUT_EVERY:
        train = [d for i, d in enumerate(docs) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
        held = [d for i, d in enumerate(docs) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
        return Corpus(data, DOC_SEPARATOR.join(train), DOC_SEPARATOR.join(held))
    text = DOC_SEPARATOR.join(docs)
    cut = int(len(text) * (1 - 1 / HELDOUT_EVERY))
    return Corpus(data, text[:cut], text[cut:])


class ByteTokenizer:
    """UTF-8 bytes as token ids (0..255); id 0 doubles as padding (masked)."""

    name = "bytes"
    vocab_size = 256
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A transformers tokenizer (AutoTokenizer) by local path or hub name."""

    def __init__(self, name: str):
        try:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(name)
        except Exception as exc:
            raise UsageError(f"--set tokenizer={name}: transformers could not load it "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                             "give a local tokenizer directory, a hub name when online, or 'bytes'") from None
        self.name = name
        self.vocab_size = len(self.tok)
        pad = self.tok.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tok.eos_token_id or 0))

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))


@lru_cache(maxsize=4)
def make_tokenizer(name: str = "bytes"):
    return ByteTokenizer() if name == "bytes" else HFTokenizer(name)


@dataclass(frozen=True)
class Chunks:
    """Fixed-length token sequences of one split: ids [n, seq_len] (int64), mask [n, seq_len]."""

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]


def chunk_tokens(tokens: list[int], seq_len: int, pad_id: int = 0) -> Chunks:
    """Cut a token stream into seq_len chunks; the last partial one is padded and masked."""
    if seq_len < 2:
        raise UsageError(f"--set seq_len={seq_len}: must be >= 2 (one input and one next token)")
    ids = torch.tensor(tokens, dtype=torch.int64)
    n = (len(tokens) + seq_len - 1) // seq_len
    out = torch.full((n * seq_len,), pad_id, dtype=torch.int64)
    out[: len(tokens)] = ids
    mask = torch.zeros(n * seq_len, dtype=torch.int64)
    mask[: len(tokens)] = 1
    ids2, mask2 = out.view(n, seq_len), mask.view(n, seq_len)
    if n and mask2[-1].sum() < 2:  # a last chunk with a single token predicts nothing
        ids2, mask2 = ids2[:-1], mask2[:-1]
    return Chunks(ids2.contiguous(), mask2.contiguous())


@lru_cache(maxsize=8)
def corpus_chunks(data: str, tokenizer: str, seq_len: int) -> tuple[Chunks, Chunks]:
    """(train, held-out) chunks of a source with a tokenizer; cached per process."""
    corpus = load_corpus(data)
    tok = make_tokenizer(tokenizer)
    train = chunk_tokens(tok.encode(corpus.train), seq_len, tok.pad_id)
    held = chunk_tokens(tok.encode(corpus.heldout), seq_len, tok.pad_id)
    if len(train) == 0 or len(held) == 0:
        raise UsageError(f"--set data={data}: too little text for one {seq_len}-token chunk in "
                         "both the train and the held-out split; give a longer corpus or a smaller seq_len")
    return train, held
