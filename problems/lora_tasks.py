"""Synthetic text tasks with exact answers, for the GENOME (LoRA expert) problems.

Each task turns a random instance into (prompt, answer) strings of a fixed
character length, e.g. `rev:cadbe=` -> `ebdac`. Exact match: the answer is
correct only if every character is. Generation is a pure function of
(data seed, task, split): the val split (fitness, about 200 samples) and the
test split (reporting) are disjoint by prompt, and the train stream (used
only to build the offline world: base pretraining and expert fine-tuning)
never repeats a val or test prompt.

Data only: no model, nothing registered (used by problems/lora_world.py and
problems/lora.py).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from harness.errors import UsageError
from harness.seeding import derive_seed

# Bump when a task's generator changes: cached worlds were trained on the old data.
TASKS_VERSION = 2
LETTERS = string.ascii_lowercase[:10]   # a..j: small alphabet keeps the tiny models' job learnable
DIGITS = string.digits


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _add(rng):
    a, b = rng.randrange(100), rng.randrange(100)
    return f"{a:02d}+{b:02d}", f"{a + b:03d}"


def _copy(rng):
    s = _letters(rng, 5)
    return s, s


def _reverse(rng):
    s = _letters(rng, 5)
    return s, s[::-1]


def _sort(rng):
    s = "".join(rng.choice(DIGITS) for _ in range(5))
    return s, "".join(sorted(s))


def _count(rng):
    s = "".join(rng.choice("abc") for _ in range(8))
    return s, str(s.count("a"))


def _pattern(rng):
    period = rng.choice((2, 3, 4))
    unit = _letters(rng, period)
    seq = (unit * 12)[:12]
    return seq[:9], seq[9:12]


def _max(rng):
    s = "".join(rng.choice(DIGITS) for _ in range(5))
    return s, max(s)


def _shift(rng):
    s = _letters(rng, 5)
    return s, "".join(LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)] for c in s)


@dataclass(frozen=True)
class Task:
    name: str
    tag: str                                  # 3-letter prefix of the prompt
    make: Callable[[random.Random], tuple[str, str]]
    description: str

    def sample(self, rng: random.Random) -> tuple[str, str]:
        x, y = self.make(rng)
        return f"{self.tag}:{x}=", y


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("add", "add", _add, "two-digit addition, 3-digit answer"),
    Task("copy", "cpy", _copy, "copy 5 letters"),
    Task("reverse", "rev", _reverse, "reverse 5 letters"),
    Task("sort", "srt", _sort, "sort 5 digits ascending"),
    Task("count", "cnt", _count, "count the a's among 8 letters of abc"),
    Task("pattern", "pat", _pattern, "continue a periodic letter pattern by 3"),
    Task("max", "max", _max, "largest of 5 digits"),
    Task("shift", "sft", _shift, "shift 5 letters by one (a->b, j->a)"),
)}


@dataclass(frozen=True)
class Split:
    prompts: tuple[str, ...]
    answers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.prompts)


def parse_tasks(spec: str) -> tuple[str, ...]:
    """'add,sort' -> ('add', 'sort'); an unknown name is a UsageError naming the valid ones."""
    names = tuple(t.strip() for t in spec.split(",") if t.strip())
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise UsageError(f"--set tasks={spec!r}: unknown task {bad[0] if bad else '(none)'}; "
                         f"valid: {', '.join(TASKS)} (comma-separated)")
    return names


@lru_cache(maxsize=64)
def splits(task: str, data_seed: int = 0, n_val: int = 200, n_test: int = 200) -> tuple[Split, Split]:
    """(val, test) of a task: distinct prompts, disjoint, fixed by data_seed."""
    rng = random.Random(derive_seed(data_seed, "lora-task", task, "eval"))
    seen: dict[str, str] = {}
    tries = 0
    while len(seen) < n_val + n_test:
        p, a = TASKS[task].sample(rng)
        seen.setdefault(p, a)
        tries += 1
        if tries > 100 * (n_val + n_test):
            raise UsageError(f"task {task}: cannot draw {n_val + n_test} distinct samples; "
                             "use fewer val/test samples")
    items = list(seen.items())
    val, test = items[:n_val], items[n_val:]
    return (Split(tuple(p for p, _ in val), tuple(a for _, a in val)),
            Split(tuple(p for p, _ in test), tuple(a for _, a in test)))


def train_stream(task: str, data_seed: int, count: int, stream_seed: int) -> list[tuple[str, str]]:
    """`count` training samples of a task that never repeat a val or test prompt."""
    val, test = splits(task, data_seed)
    held = set(val.prompts) | set(test.prompts)
    rng = random.Random(derive_seed(data_seed, "lora-task", task, "train", stream_seed))
    out = []
    while len(out) < count:
        p, a = TASKS[task].sample(rng)
        if p not in held:
            out.append((p, a))
    return out
