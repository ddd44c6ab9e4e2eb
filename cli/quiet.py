"""Third-party warnings that are not the user's business, filtered at their source.

Each filter names the category, the module that issues the warning and the start of
its message, so anything else (a new deprecation, a warning about the user's own
input) still shows. The CLI installs them (`install`); pyproject.toml's pytest
`filterwarnings` carries the same lines (`pytest_lines`; a test checks they agree).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple


class Noise(NamedTuple):
    category: type[Warning]
    module: str     # regex on the issuing module's name
    message: str    # regex on the start of the message (no ':', pytest splits on it)
    why: str


FILTERS: tuple[Noise, ...] = (
    Noise(FutureWarning, r"transformers\.modeling_utils", r"`is_gradient_checkpointing` is deprecated",
          "peft's PeftModel reads the deprecated property when it wraps any model (lora-* problems, "
          "also on the meta device in list/plan/describe); nothing the user can change"),
    Noise(DeprecationWarning, r"nevergrad\.optimization\.metamodel", r"Conversion of an array with ndim > 0",
          "nevergrad 1.0.12's MetaModel (picked by NGOpt) calls float() on 1-d arrays, once per "
          "ask (about 1,500 lines per 200-evaluation run); numpy<2.4 is pinned for it"),
    Noise(UserWarning, r"scipy\._lib\.pyprima\.common\.preproc", r"COBYLA. Invalid RHOEND",
          "nevergrad's recast Cobyla (picked by NGOpt for small budgets) passes rhoend > rhobeg to "
          "scipy, which corrects it; the search is nevergrad's choice, not the user's"),
    Noise(DeprecationWarning, r"mlflow\.store\.tracking\.sqlalchemy_store", r"The ``noload`` loader strategy",
          "mlflow's SQLite store (--log mlflow) configures its SQLAlchemy mappers with a deprecated "
          "option; mlflow's to fix"),
)


def install() -> None:
    """Ignore exactly the FILTERS (called by the CLI before any library is imported)."""
    for f in FILTERS:
        warnings.filterwarnings("ignore", message=f.message, category=f.category, module=f.module)


def pytest_lines() -> list[str]:
    """FILTERS as pytest `filterwarnings` lines (action:message:category:module)."""
    return [f"ignore:{f.message}:{f.category.__name__}:{f.module}" for f in FILTERS]
