"""The README's promises that a file can check: short, its two commands the ones CI runs,
every link resolving."""

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)


def test_readme_is_short_and_its_first_command_is_on_the_first_screen():
    lines = README.splitlines()
    assert len(lines) < 150, len(lines)
    first = next(i for i, line in enumerate(lines) if line.startswith("```bash"))
    assert first < 25, f"the first command starts at line {first + 1}"


def test_the_two_commands_are_the_main_job_and_the_ci_test_command():
    main_job, tests = _commands()[:2]
    assert main_job == ("pip install torch==2.13.0 && pip install -e . && "
                        "python -m harness run --optimizer es --problem qwen3-tiny --steps 50")
    *installs, pytest_cmd = tests.split(" && ")
    ci_lines = [line.strip() for line in CI.splitlines()]
    assert pytest_cmd.startswith("python -m pytest") and pytest_cmd in ci_lines, pytest_cmd
    # CI installs as the README says, only quieter
    assert " && ".join(installs) in [line.replace("pip install -q ", "pip install ") for line in ci_lines]


def test_every_relative_link_of_the_readme_and_the_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and "://" not in path and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing
