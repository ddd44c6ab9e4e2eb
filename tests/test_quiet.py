"""The quiet console: named third-party noise filtered, everything else still shown."""

from __future__ import annotations

import tomllib
import warnings

from conftest import ROOT

import cli
from cli import quiet


def test_pytest_filters_are_the_clis():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert ini["filterwarnings"] == quiet.pytest_lines()


def _emitted(message, category, module) -> list:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    return seen


def test_only_the_named_warning_of_the_named_module_is_filtered():
    named = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    assert _emitted(named, FutureWarning, "transformers.modeling_utils") == []
    # the same text from the user's own code, another transformers warning, another category: shown
    assert len(_emitted(named, FutureWarning, "my_model")) == 1
    assert len(_emitted("`foo` is deprecated", FutureWarning, "transformers.modeling_utils")) == 1
    assert len(_emitted(named, UserWarning, "transformers.modeling_utils")) == 1


def test_a_lora_problem_prints_no_warning(capsys):
    # lora-* problems wrap their meta model in peft, which printed transformers'
    # FutureWarning into every `list` and `plan` table (the same path as describe's count)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert cli.main(["describe", "lora-count"]) == 0
    out, err = capsys.readouterr()
    assert [str(w.message) for w in seen] == [] and err == "" and "124.80K" in out
