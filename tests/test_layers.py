"""The floors hold: the engine (harness/) imports nothing above it, and each floor only
the ones below (pyproject.toml's [tool.importlinter] layers contract, checked as CI's
`lint-imports` checks it), so an upward import fails here first."""

from conftest import ROOT


def test_no_floor_imports_a_floor_above_it(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    rc = lint_imports(no_cache=True)
    assert rc == 0, capsys.readouterr().out

