"""Every `snakemake` and `noise2map` command that README.md and docs/ show still works:
snakemake commands are dry-run (`-n`) from a scratch folder, noise2map commands are parsed by
the real argument parser, so a renamed flag, target or subcommand fails here before a user
meets it."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from noise2map.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]


def readme_commands(tool: str) -> list[str]:
    """``tool`` commands of the README's code blocks (``&&`` chains split, comments dropped)
    and of its inline code spans."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", page, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in line.split("  #")[0].split("&&"):
                    if part.strip().startswith(f"{tool} "):
                        found.append(part.strip())
        prose = re.sub(r"```.*?```", " ", page, flags=re.S).replace("\n", " ")
        for span in re.findall(r"`([^`]+)`", prose):
            if span.startswith(f"{tool} ") and span not in found:
                found.append(span)
    return [" ".join(c.split()) for c in dict.fromkeys(found)]


def _optional_parts(command: str) -> str:
    """``[--devices 2]`` → ``--devices 2``; ``a|b`` → ``a``; ``...`` dropped."""
    command = re.sub(r"\[--\S+ (\.\.\.|…)\]", "", command)  # [--models ...]: any list
    command = re.sub(r"\[([^\]]*)\]", r"\1", command)
    command = re.sub(r"(\S+?)\|\S+", r"\1", command)
    return command.replace("...", "").replace("…", "")


NOISE2MAP = readme_commands("noise2map")
# a snakemake span in the prose that names no target (`snakemake --unlock`) is not a run
SNAKEMAKE = [c for c in readme_commands("snakemake") if "results/" in c]


def test_the_readme_shows_commands_of_both_tools():
    assert len(SNAKEMAKE) >= 8 and len(NOISE2MAP) >= 10
    assert any("--configfile workflow/config/demo.yaml" in c and "--report" in c for c in SNAKEMAKE)
    assert "snakemake --profile workflow/profiles/demo" in (ROOT / "README.md").read_text()


def test_the_demo_profile_is_the_long_form_of_the_demo_command():
    """`snakemake --profile workflow/profiles/demo` (the README's first command) sets what the
    long form in docs/quick-start.md passes on the command line."""
    import yaml

    profile = yaml.safe_load((ROOT / "workflow/profiles/demo/config.yaml").read_text())
    long_form = next(c for c in SNAKEMAKE if "--report-after-run" in c and "--configfile workflow/config/demo.yaml" in c)
    tokens = shlex.split(long_form)
    assert profile["configfile"] == tokens[tokens.index("--configfile") + 1:]
    assert profile["cores"] == tokens[tokens.index("--cores") + 1] == "all"
    assert profile["report"] == tokens[tokens.index("--report") + 1] and profile["report-after-run"] is True


@pytest.mark.slow
def test_the_demo_profile_dry_runs_the_whole_demo(tmp_path):
    import yaml

    profile = yaml.safe_load((ROOT / "workflow/profiles/demo/config.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "-n", "--cores", "1", "--configfile",
                           *[str(ROOT / f) for f in profile["configfile"]]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"total\s+106", done.stdout + done.stderr)


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, action.choices


@pytest.mark.parametrize("command", NOISE2MAP)
def test_a_readme_noise2map_command_names_a_real_subcommand_and_real_options(command):
    """Prose often shows a command's shape (``noise2map train --variant TEXT``): its
    subcommand (each of ``a|b``) must exist and every ``--option`` must be one it takes."""
    parser, commands = _subparsers()
    tokens = shlex.split(command.replace("…", ""))[1:]
    options = [t.split("=")[0] for t in tokens if t.startswith("--")]
    names = next((t for t in tokens if not t.startswith("-")), None)
    for name in (names.split("|") if names else []):
        assert name in commands, f"{command}: no subcommand {name!r}"
        sub = commands[name]
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        rest = [t for t in tokens[tokens.index(names) + 1:] if not t.startswith("-")]
        if nested and rest and rest[0] in nested[0].choices:  # bench efficiency, data status, ...
            sub = nested[0].choices[rest[0]]
        known = set(sub._option_string_actions) | set(parser._option_string_actions)
        assert not set(options) - known, f"{command}: {sorted(set(options) - known)} not options of {name}"


BLOCK_COMMANDS = [c for c in NOISE2MAP if not any(p in c for p in ("CFG", "RUN", "CSV", "BASE", "<", "TEXT", " N"))
                  and len(shlex.split(c.replace("…", ""))) > 2]


@pytest.mark.parametrize("command", BLOCK_COMMANDS)
def test_a_complete_readme_noise2map_command_parses(command):
    args = build_parser().parse_args(shlex.split(_optional_parts(command))[1:])
    assert callable(args.func), command


def _dry_run_form(command: str) -> list[str]:
    """The command's arguments as a dry run from a scratch folder: no --cores, --report or
    --report-after-run; paths into the repository made absolute."""
    tokens, out = shlex.split(command)[1:], []
    dropped_value = {"--cores", "--report"}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in dropped_value:
            i += 2
            continue
        if token not in ("--report-after-run", "-n"):
            out.append(str(ROOT / token) if token.startswith(("workflow/", "examples/")) else token)
        i += 1
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", SNAKEMAKE)
def test_a_readme_snakemake_command_dry_runs(command, tmp_path):
    args = _dry_run_form(command)
    # the example plugin, as after `pip install -e examples/external_model` (its preset names it
    # in model_modules too)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples" / "external_model"),
                                                         os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "-n", "--cores", "1", *args],
                          capture_output=True, text=True, timeout=300, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, (command, out[-3000:])
    assert "Job stats" in out or "Nothing to be done" in out, (command, out[-2000:])
