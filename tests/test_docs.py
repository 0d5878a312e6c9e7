"""The docs stay true: commands, options and source paths they name exist.

README.md and docs/*.md are read as a user reads them; every ``nexlify <command>`` must be a
command of the CLI, every ``--option`` under a command's heading in docs/commands.md must be
accepted by that command's parser (and every option of the parser must be documented there),
and every ``src/`` path and name in docs/architecture.md must exist.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from nexlify.cli import build_parser
from nexlify.commands import COMMAND_HELP

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COMMANDS_DOC = DOCS / "commands.md"
ARCHITECTURE_DOC = DOCS / "architecture.md"

# "nexlify train", "nexlify paper status": a word after "nexlify " (not "nexlify/", "nexlify[")
COMMAND_USE = re.compile(r"\bnexlify ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SECTION = re.compile(r"^## `nexlify ([a-z-]+)[^`]*`", re.MULTILINE)
SOURCE_PATH = re.compile(r"src/nexlify/[\w/.]*[\w/]")
# "`src/nexlify/x.py`: `name`, `Class.method`" in the where-to-find table
PATH_AND_NAMES = re.compile(r"`(src/nexlify/[\w/]+\.py)`: ((?:`[\w.]+`(?:, )?)+)")
# options of other programs that the docs quote (`tensorboard --logdir ...`)
OTHER_PROGRAMS = {"--logdir"}


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """{name: parser} of a parser's subcommands (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def accepted_options(parser: argparse.ArgumentParser) -> set[str]:
    """Long options a command accepts, its subcommands' included (``data download``...)."""
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    for child in subparsers(parser).values():
        options |= accepted_options(child)
    return options - {"--help"}


def positional_choices(parser: argparse.ArgumentParser) -> set[str]:
    """Words a command takes after its name: subcommands or a positional's choices."""
    words = set(subparsers(parser))
    for action in parser._actions:
        if (
            not action.option_strings
            and action.choices
            and not isinstance(action, argparse._SubParsersAction)
        ):
            words |= set(action.choices)
    return words


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    return subparsers(build_parser())


def command_sections() -> dict[str, str]:
    """{command: its text in docs/commands.md}, from each ``## `nexlify <command> ...``` heading."""
    text = COMMANDS_DOC.read_text(encoding="utf-8")
    heads = list(SECTION.finditer(text))
    return {
        head.group(1): text[head.end() : nxt.start() if nxt else len(text)]
        for head, nxt in zip(heads, [*heads[1:], None], strict=True)
    }


def test_the_docs_pages_exist() -> None:
    names = {p.name for p in DOCS.glob("*.md")}
    for page in ("commands.md", "market.md", "data.md", "evaluation.md", "study.md",
                 "strategies.md", "scale-out.md", "paper-live.md", "benchmarks.md",
                 "architecture.md"):  # fmt: skip
        assert page in names, f"docs/{page} is missing"


def test_the_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_every_nexlify_command_named_in_the_docs_exists(
    commands: dict[str, argparse.ArgumentParser],
) -> None:
    assert set(commands) == set(COMMAND_HELP)
    found = 0
    for path in doc_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for use in COMMAND_USE.finditer(line):
                name, word = use.groups()
                where = f"{path.relative_to(ROOT)}:{n}: nexlify {name}"
                assert name in commands, f"{where} is not a command ({sorted(commands)})"
                words = positional_choices(commands[name])
                if word is not None and words and not line[use.end(1) :].startswith(" --"):
                    assert word in words, f"{where} {word}: not one of {sorted(words)}"
                found += 1
    assert found > 50  # the pattern still matches what the docs write


def test_every_command_has_a_section_in_commands_md(
    commands: dict[str, argparse.ArgumentParser],
) -> None:
    assert set(command_sections()) == set(commands)


def test_every_option_in_commands_md_is_accepted_by_its_command(
    commands: dict[str, argparse.ArgumentParser],
) -> None:
    for name, text in command_sections().items():
        named = set(OPTION.findall(text)) - OTHER_PROGRAMS
        unknown = named - accepted_options(commands[name])
        assert not unknown, f"docs/commands.md, nexlify {name}: {sorted(unknown)} not accepted"


def test_every_option_of_every_command_is_in_commands_md(
    commands: dict[str, argparse.ArgumentParser],
) -> None:
    sections = command_sections()
    shared = sections["train"]  # data, risk and strategy options are described once, there
    for name, parser in commands.items():
        named = set(OPTION.findall(sections[name] + shared))
        missing = accepted_options(parser) - named
        assert not missing, f"docs/commands.md, nexlify {name}: {sorted(missing)} undocumented"


def test_the_option_pattern_reads_options_as_written() -> None:
    text = "`--per`/`--no-per`, `--i-understand-this-trades-real-money`, a-b--c, `--v-max V`"
    assert OPTION.findall(text) == ["--per", "--no-per", "--i-understand-this-trades-real-money",
                                    "--v-max"]  # fmt: skip


def test_every_source_path_in_architecture_md_exists() -> None:
    paths = set(SOURCE_PATH.findall(ARCHITECTURE_DOC.read_text(encoding="utf-8")))
    assert len(paths) > 20
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_name_in_the_where_to_find_table_is_defined_there() -> None:
    pairs = PATH_AND_NAMES.findall(ARCHITECTURE_DOC.read_text(encoding="utf-8"))
    assert len(pairs) > 10
    for path, names in pairs:
        source = (ROOT / path).read_text(encoding="utf-8")
        for dotted in re.findall(r"`([\w.]+)`", names):
            for part in dotted.split("."):
                defined = rf"^(?:\s*(?:def|class) {part}\b|{part}\b[\w, ]*=)"
                assert re.search(defined, source, re.MULTILINE), (
                    f"docs/architecture.md: {dotted} is not defined in {path}"
                )


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (code blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    heads = re.findall(r"^#+ (.*)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_relative_link_in_the_docs_resolves() -> None:
    checked = 0
    for page in doc_files():
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if link.startswith(("http://", "https://")):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({link})"
            assert target.exists(), f"{where}: no such file"
            if anchor:
                assert anchor in heading_anchors(target.read_text(encoding="utf-8")), (
                    f"{where}: no heading with that anchor"
                )
            checked += 1
    assert checked > 30


def test_anchors_are_made_as_github_makes_them() -> None:
    text = (
        "## `nexlify data download | list`\n```\n# not a heading\n```\n### Live trading (guarded)"
    )
    assert heading_anchors(text) == {"nexlify-data-download--list", "live-trading-guarded"}
