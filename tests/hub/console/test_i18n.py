"""The console's languages: every message of every page translated, the browser's choice, and CLDR formats."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
from babel.messages.extract import extract

from hub.console import i18n

CONSOLE = Path(str(resources.files("hub.console")))
GETTEXT_NAMES = {"_", "gettext", "ngettext"}


def template_messages() -> Iterator[tuple[str, str]]:
    """(file, msgid) of every message the templates mark for translation."""
    for path in sorted((CONSOLE / "templates").rglob("*.html")):
        with path.open("rb") as stream:
            for _, message, _, _ in extract(
                "jinja2.ext:babel_extract", stream, options={"extensions": "jinja2.ext.i18n"}
            ):
                yield path.name, message if isinstance(message, str) else message[0]


def python_messages() -> Iterator[tuple[str, str]]:
    """(file, msgid) of every literal passed to gettext/ngettext in the console's Python code."""
    for path in sorted(CONSOLE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            first = node.args[0]
            if name in GETTEXT_NAMES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield path.name, first.value


def test_the_templates_use_messages_at_all() -> None:
    assert ("base.html", "Sign out") in set(template_messages())


@pytest.mark.parametrize("locale", ["zh_Hant", "zh_Hans"])
def test_every_message_of_the_console_has_a_translation(locale: str) -> None:
    catalog = i18n.catalog_of(locale)
    missing = sorted(
        {
            f"{where}: {message!r}"
            for where, message in (*template_messages(), *python_messages())
            if message not in catalog
        }
    )
    assert not missing, f"{len(missing)} messages have no {locale} translation:\n" + "\n".join(missing)


def test_traditional_and_simplified_are_not_the_same_catalog() -> None:
    assert i18n.Translator("zh_Hant").gettext("Sign out") == "登出"
    assert i18n.Translator("zh_Hans").gettext("Sign out") == "退出登录"
    assert i18n.Translator("en").gettext("Sign out") == "Sign out"
    # A message nobody translated shows its English words rather than nothing.
    assert i18n.Translator("zh_Hant").gettext("no such message") == "no such message"


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-TW,zh;q=0.9,en;q=0.8", "zh_Hant"),
        ("zh-HK", "zh_Hant"),
        ("zh-Hant-TW", "zh_Hant"),
        ("zh-CN,zh;q=0.9", "zh_Hans"),
        ("zh", "zh_Hans"),
        ("en-GB,en;q=0.9,zh-TW;q=0.8", "en"),
        ("fr-FR,zh-TW;q=0.5", "zh_Hant"),
        ("de-DE", "en"),
        ("en;q=0.1,zh-CN;q=0.9", "zh_Hans"),
        ("zh-TW;q=nonsense,en", "en"),
        ("x" * 5000, "en"),
    ],
)
def test_the_browsers_languages_choose_the_locale(header: str | None, locale: str) -> None:
    assert i18n.negotiate(header) == locale


def test_money_is_written_in_the_stores_currency_and_the_readers_format() -> None:
    assert i18n.Formats("en").money(Decimal("1234.5"), "GBP") == "£1,234.50"
    assert i18n.Formats("en").money(Decimal("1234"), "JPY") == "¥1,234"
    assert i18n.Formats("zh_Hant").money(Decimal("1234.5"), "TWD") == "$1,234.50"
    assert i18n.Formats("zh_Hans").money(Decimal("1234.5"), "CNY") == "¥1,234.50"


def test_times_are_the_stores_wall_clock() -> None:
    moment = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    assert i18n.Formats("en").time(moment, "Europe/London") == "1:30\u202fPM"
    assert i18n.Formats("en").time(moment, "Asia/Taipei") == "8:30\u202fPM"
    assert "20:30" in i18n.Formats("zh_Hant").date_time(moment, "Asia/Taipei", size="short").replace(
        "晚上8:30", "20:30"
    )


def test_readings_show_units_as_people_write_them() -> None:
    assert i18n.Formats("en").measurement(4.5, "Cel") == "4.5 °C"
    assert i18n.unit_text("%") == "%"
    assert i18n.unit_text("mystery") == "mystery"
    assert "hour" in i18n.Formats("en").duration(timedelta(hours=3))
