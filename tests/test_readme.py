"""The README says what the code does: its options table is the one nftredir.config.OPTIONS makes."""

from __future__ import annotations

from nftredir.config import OPTIONS
from nftredir.sources.report import options_markdown
from tests.conftest import REPO


def test_the_readme_options_table_is_the_one_the_option_table_makes():
    readme = (REPO / "README.md").read_text()
    assert options_markdown() in readme


def test_every_option_is_in_the_readme_table_and_the_help():
    from nftredir.cli import _help  # the help typer shows for each option

    table = options_markdown()
    for name, option in OPTIONS.items():
        assert f"`--{name} {option.metavar}`" in table
        assert option.help in _help(name)
        if option.default_text():
            assert f"default: {option.default_text()}" in _help(name)
