"""The README, docs/ and benchmarks/*.md say only what exists: every relative link and image
resolves to a file, and every command they show names real stages (dvc.yaml), real params keys
(params.yaml), real `inat-cnn` subcommands and flags (the CLI's own argparse parser), and scripts
that exist with the flags they define. The checker runs on the real pages, and on bad snippets to
show it fails."""

from __future__ import annotations

import argparse
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from inat_cnn.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.md"))]


def shown(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else str(page)

FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL_COMMENT = re.compile(r"(^|\s)#.*$")
PLACEHOLDER = re.compile(r"[<>$*…]|\.\.\.|^[A-Z][A-Z_]*$")  # <stage>, $VAR, ..., NAME
# `dvc exp run` / `dvc repro` options that take a value (the value is not a stage name)
VALUED = {"-S", "--set-param", "-n", "--name", "-j", "--jobs", "-m", "--message", "-r", "--rev"}


def split_code(text: str) -> tuple[str, list[str]]:
    """(the prose with fenced blocks and HTML comments removed, the fenced blocks' contents)."""
    text = HTML_COMMENT.sub("", text)
    return FENCE.sub("", text), FENCE.findall(text)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to -,
    a repeated one suffixed -1, -2, ..."""
    counts: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", split_code(text)[0], re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
        counts[slug] = counts.get(slug, 0) + 1
    return found


def link_problems(page: Path, text: str) -> list[str]:
    """Relative links and images in the prose (not in code) whose file, or whose anchor in a
    Markdown file, does not exist."""
    prose = INLINE.sub("", split_code(text)[0])
    problems = []
    for target in LINK.findall(prose):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # a URL: https:, mailto:
        rel, _, anchor = target.partition("#")
        path = page.parent / rel if rel else page
        if not path.exists():
            problems.append(f"{shown(page)}: dead link {target}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text() if rel else text):
            problems.append(f"{shown(page)}: no heading for the anchor in {target}")
    return problems


def command_lines(text: str) -> list[str]:
    """Every line of every fenced block (continuations joined) and every inline code snippet."""
    prose, blocks = split_code(text)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + INLINE.findall(prose)


def simple_commands(line: str) -> list[list[str]]:
    """A shell line as its simple commands (split on ; && || | $( ) ), each a token list."""
    lexer = shlex.shlex(SHELL_COMMENT.sub("", line), posix=True, punctuation_chars="();|&")  # not <>: placeholders
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []
    commands, current = [], []
    for token in tokens:
        if token and set(token) <= set(";&|()$"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def strip_prefix(tokens: list[str]) -> list[str]:
    """Drop what runs the command rather than being it: VAR=value, sudo -u USER, nice -n N, time."""
    while tokens:
        if re.fullmatch(r"[A-Z_]+=.*", tokens[0]) or tokens[0] == "time":
            tokens = tokens[1:]
        elif tokens[0] in ("sudo", "nice") and len(tokens) > 2 and tokens[1] in ("-u", "-n"):
            tokens = tokens[3:]
        else:
            return tokens
    return tokens


@cache
def stages() -> frozenset[str]:
    return frozenset(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


@cache
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def param_exists(key: str) -> bool:
    node = params()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def set_param_problems(tokens: list[str]) -> list[str]:
    """-S key=value / --set-param key=value / --set-param=key=value: the key is in params.yaml."""
    problems = []
    for i, token in enumerate(tokens):
        value = tokens[i + 1] if token in ("-S", "--set-param") and i + 1 < len(tokens) else None
        if token.startswith("--set-param="):
            value = token.split("=", 1)[1]
        if value is None or PLACEHOLDER.search(value.split("=")[0]):
            continue
        key = value.split("=", 1)[0].split(":")[-1]  # params.yaml:train.lr=... names the file first
        if not param_exists(key):
            problems.append(f"-S {value}: params.yaml has no key {key}")
    return problems


def stage_problems(tokens: list[str]) -> list[str]:
    """`dvc repro X` and `dvc exp run ... X`: every positional argument is a stage of dvc.yaml."""
    rest = tokens[2:] if tokens[1] == "repro" else tokens[3:]
    problems, skip = [], False
    for token in rest:
        if skip or token.startswith("-"):
            skip = token in VALUED
            continue
        if not PLACEHOLDER.search(token) and token not in stages():
            problems.append(f"{' '.join(tokens)}: dvc.yaml has no stage {token}")
    return problems


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def cli_problems(tokens: list[str]) -> list[str]:
    """`inat-cnn SUB [SUBSUB] --flag`: each subcommand and flag exists in the CLI's argparse parser."""
    parser, path, rest = build_parser(), ["inat-cnn"], tokens[1:]
    while rest and not rest[0].startswith("-") and (sub := subparsers_of(parser)) is not None:
        if PLACEHOLDER.search(rest[0]):
            return []
        if rest[0] not in sub.choices:
            return [f"{' '.join(path)} has no subcommand {rest[0]} (it has {', '.join(sub.choices)})"]
        parser = sub.choices[rest[0]]
        path.append(rest.pop(0))
    flags = {s for action in parser._actions for s in action.option_strings}
    return [f"{' '.join(path)} has no flag {t.split('=')[0]}" for t in rest
            if re.match(r"--?[a-zA-Z]", t) and t.split("=")[0] not in flags]


def script_flags(script: Path) -> set[str]:
    """The option strings a script's argparse calls define (read from its source: no import, no torch)."""
    calls = re.findall(r"add_argument\(([^)]*)", script.read_text())
    return {flag for call in calls for flag in re.findall(r"[\"'](--?[\w-]+)[\"']", call)} | {"-h", "--help"}


def script_problems(tokens: list[str]) -> list[str]:
    """`python stages/x.py`, `python benchmarks/x.py --flag`, `pytest tests/x.py`: the file exists;
    a script's flags are among those it defines."""
    is_python = Path(tokens[0]).name in ("python", "python3")
    paths = tokens[1:2] if is_python else [t.split("::")[0] for t in tokens[1:] if t.startswith("tests/")]
    problems = []
    for rel in paths:
        if PLACEHOLDER.search(rel) or not rel.endswith(".py"):
            continue
        if not (REPO / rel).is_file():
            problems.append(f"{' '.join(tokens)}: no file {rel}")
        elif is_python:
            known = script_flags(REPO / rel)
            problems += [f"{' '.join(tokens)}: {rel} has no flag {t.split('=')[0]}" for t in tokens[2:]
                         if re.match(r"--?[a-zA-Z]", t) and t.split("=")[0] not in known]
    return problems


def command_problems(text: str) -> list[str]:
    problems = []
    for line in command_lines(text):
        for tokens in map(strip_prefix, simple_commands(line)):
            if not tokens:
                continue
            problems += set_param_problems(tokens)
            if tokens[:2] == ["dvc", "repro"] or tokens[:3] == ["dvc", "exp", "run"]:
                problems += stage_problems(tokens)
            elif Path(tokens[0]).name == "inat-cnn":
                problems += cli_problems(tokens)
            elif Path(tokens[0]).name in ("python", "python3", "pytest"):
                problems += script_problems(tokens)
    return problems


REPO_PATH = re.compile(r"(?:src|stages|benchmarks|tests|docs|sweeps|\.ci)/[\w./-]*")


def path_problems(text: str) -> list[str]:
    """Inline code that is a path into the repository's own folders (`src/inat_cnn/report/`,
    `tests/test_x.py::name`) names something that exists."""
    snippets = [s.split("::")[0] for s in INLINE.findall(split_code(text)[0])]
    return [f"no file or folder {s}" for s in snippets if REPO_PATH.fullmatch(s) and not (REPO / s).exists()]


def test_every_relative_link_and_image_in_the_docs_resolves():
    assert len(PAGES) >= 10, PAGES  # README, the topic pages, benchmarks/README and RESULTS
    problems = [p for page in PAGES for p in link_problems(page, page.read_text())]
    assert problems == []


def test_every_command_in_the_docs_names_real_stages_params_flags_and_scripts():
    problems = [f"{shown(page)}: {p}" for page in PAGES
                for p in command_problems(page.read_text()) + path_problems(page.read_text())]
    assert problems == []


def test_the_readme_stays_short_and_keeps_the_two_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . && dvc repro" in readme
    ci_command = (REPO / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci_command in readme  # .ci/run runs exactly the README's test command


BAD = {
    "a dead link": ("see [the page](docs/nope.md#top)", "dead link docs/nope.md#top"),
    "a dead image": ("![shot](docs/missing.png)", "dead link docs/missing.png"),
    "a dead anchor": ("[outputs](docs/pipeline.md#the-outputs)", "no heading for the anchor in docs/pipeline.md#the-outputs"),
    "an unknown stage": ("```bash\ndvc repro -f trian_scratch\n```", "no stage trian_scratch"),
    "an unknown exp target": ("`dvc exp run --queue -S train.lr=1e-3 evaluate_scrach`", "no stage evaluate_scrach"),
    "an unknown param key": ("```bash\ndvc exp run -S train.lrr=1e-4   # a typo\n```", "no key train.lrr"),
    "an unknown --set-param key": ("`dvc exp run --set-param=model.filterz=64`", "no key model.filterz"),
    "an unknown subcommand": ("`inat-cnn sweep runn sweeps/scratch.yaml`", "no subcommand runn"),
    "an unknown CLI flag": ("```\ninat-cnn predict m.pt a.jpg --topk 3\n```", "no flag --topk"),
    "a flag of another subcommand": ("`inat-cnn sweep report --trials 3`", "no flag --trials"),
    "a missing stage script": ("`python stages/nope.py`", "no file stages/nope.py"),
    "an unknown benchmark flag": ("`nice -n 19 .venv/bin/python benchmarks/throughput.py --imagez 10`", "no flag --imagez"),
    "a missing test file": ("`pytest tests/test_nope.py -k x`", "no file tests/test_nope.py"),
    "a path that moved": ("the page is built by `src/inat_cnn/reports/page.py`", "no file or folder src/inat_cnn/reports/page.py"),
}


@pytest.mark.parametrize("name", BAD)
def test_the_checker_catches(name: str):
    text, expected = BAD[name]
    problems = link_problems(REPO / "README.md", text) + command_problems(text) + path_problems(text)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_checker_passes_good_snippets():
    text = """[ok](docs/pipeline.md#outputs) ![pic](docs/report.png) [web](https://dvc.org) [top](README.md#compare-runs)
[code](docs/pipeline.md#data-sources-datasource) [table](benchmarks/RESULTS.md#headline-figures)
```bash
dvc repro -f download && dvc exp run --queue -n a -S 'train.lr=1e-3,1e-4' -S data.synthetic.train_per_class=5 train_scratch
inat-cnn sweep run sweeps/scratch.yaml --trials 8 --jobs 2 --pruner halving   # a comment --nope
inat-cnn predict models/scratch.pt photo.jpg --no-tta --top-k=2; inat-cnn --version
python benchmarks/seed_spread.py --model finetune --variant e20:epochs=20 \\
    --seeds 42
dvc exp run -S <key>=<value> <stage>
```
`pytest tests/test_docs.py::test_the_checker_passes_good_snippets` `python stages/evaluate.py scratch`
`src/inat_cnn/report/` `tests/test_docs.py::test_the_checker_catches` `benchmarks/photos.py`
"""
    assert link_problems(REPO / "README.md", text) + command_problems(text) + path_problems(text) == []
