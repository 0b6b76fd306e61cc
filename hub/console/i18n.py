"""The console's languages: message catalogs, the choice of language per request, and locale-aware formats.

The words of the pages are gettext messages in ``.po`` catalogs under ``hub/console/locale/<locale>/``: one file
per area of the console (``base.po``, ``alerts.po``…), all of a locale's files read into one catalog when the hub
starts. English is the source language: its catalog may be empty and a message without a translation shows its
English words. Translators edit the ``.po`` files; nothing is compiled at install time.

Numbers, money and times are formatted by Babel (CLDR data) for the reader's locale: a store's money in the
store's currency, a store's times in the store's time zone.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Final
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime, format_time, format_timedelta
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent

# The locales the console speaks, in the order the language menu lists them; the first is the default.
LOCALES: Final = ("en", "zh_Hant", "zh_Hans")
DEFAULT_LOCALE: Final = "en"
# Each language named in its own words, as people look for it in a menu.
LANGUAGE_NAMES: Final[Mapping[str, str]] = {"en": "English", "zh_Hant": "繁體中文", "zh_Hans": "简体中文"}
# The value of <html lang>: BCP 47, which browsers and screen readers understand.
HTML_LANG: Final[Mapping[str, str]] = {"en": "en", "zh_Hant": "zh-Hant", "zh_Hans": "zh-Hans"}

# Units as the wire carries them (UCUM codes) and as people read them.
_UNIT_TEXT: Final[Mapping[str, str]] = {
    "Cel": "°C",
    "[degF]": "°F",
    "%": "%",
    "g": "g",
    "kg": "kg",
    "hPa": "hPa",
    "ppm": "ppm",
    "[ppm]": "ppm",
    "lx": "lx",
}


def unit_text(code: str) -> str:
    """A UCUM unit code as people write it: ``Cel`` is ``°C``; an unknown code is shown as it came."""
    return _UNIT_TEXT.get(code, code)


@functools.cache
def _messages(locale: str) -> Mapping[str, str | tuple[str, ...]]:
    """Every translated message of ``locale``, from all of its ``.po`` files."""
    messages: dict[str, str | tuple[str, ...]] = {}
    folder = resources.files("hub.console") / "locale" / locale
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".po"):
            continue
        with entry.open("rb") as stream:
            catalog = read_po(stream, locale=locale)
        for message in catalog:
            if not message.id or message.fuzzy:
                continue
            key = message.id if isinstance(message.id, str) else message.id[0]
            if isinstance(message.string, str):
                if message.string:
                    messages[key] = message.string
            elif message.string and all(message.string):
                messages[key] = tuple(str(form) for form in message.string)
    return messages


def catalog_of(locale: str) -> Mapping[str, str | tuple[str, ...]]:
    """The messages of a locale (read once); a locale the console does not speak has none."""
    return _messages(locale) if locale in LOCALES else {}


@dataclass(frozen=True, slots=True)
class Translator:
    """gettext and ngettext for one locale, as the templates call them."""

    locale: str

    def gettext(self, message: str) -> str:
        found = catalog_of(self.locale).get(message)
        return found if isinstance(found, str) else message

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        found = catalog_of(self.locale).get(singular)
        if isinstance(found, tuple):
            index = _babel_locale(self.locale).plural_form(n)
            forms = ("one", "other") if len(found) == 2 else None
            if forms is None or len(found) == 1:
                return found[0]
            return found[forms.index(index) if index in forms else -1]
        return singular if n == 1 else plural


def negotiate(accept_language: str | None) -> str:
    """The console's locale that best fits a browser's Accept-Language; English when none does.

    ``zh-TW``, ``zh-HK`` and ``zh-MO`` read Traditional characters; any other Chinese reads Simplified.
    """
    if not accept_language:
        return DEFAULT_LOCALE
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        weighted.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(weighted):
        if tag.startswith("zh"):
            traditional = any(mark in tag for mark in ("hant", "-tw", "-hk", "-mo"))
            return "zh_Hant" if traditional else "zh_Hans"
        if tag.startswith("en") or tag == "*":
            return "en"
    return DEFAULT_LOCALE


@functools.cache
def _babel_locale(locale: str) -> Locale:
    """Babel's locale (its CLDR data), parsed once per process rather than at every number formatted."""
    return Locale.parse(locale)


@dataclass(frozen=True, slots=True)
class Formats:
    """Numbers, money and times for one reader's locale."""

    locale: str

    @property
    def _babel(self) -> Locale:
        return _babel_locale(self.locale)

    def number(self, value: float | int | Decimal, *, digits: int | None = None) -> str:
        if digits is not None:
            pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
            return format_decimal(value, format=pattern, locale=self._babel)
        return format_decimal(value, locale=self._babel)

    def percent(self, fraction: float) -> str:
        return format_percent(fraction, locale=self._babel)

    def money(self, amount: Decimal | float, currency: str) -> str:
        return format_currency(amount, currency, locale=self._babel)

    def date_time(self, moment: datetime, time_zone: str, *, size: str = "medium") -> str:
        """``moment`` as the store's wall clock reads it, in the reader's language."""
        return format_datetime(moment, format=size, tzinfo=ZoneInfo(time_zone), locale=self._babel)

    def time(self, moment: datetime, time_zone: str, *, size: str = "short") -> str:
        return format_time(moment, format=size, tzinfo=ZoneInfo(time_zone), locale=self._babel)

    def duration(self, span: timedelta) -> str:
        """How long, in words: ``5 minutes``, ``3 小時``."""
        return format_timedelta(span, threshold=1.1, locale=self._babel)

    def measurement(self, value: float, unit: str) -> str:
        """A reading with its unit as people write it: ``4.5 °C``."""
        return f"{self.number(value)} {unit_text(unit)}"


# The locale of the request being rendered: the templates' _() and ngettext() read it.
_current: contextvars.ContextVar[Translator | None] = contextvars.ContextVar("console_translator", default=None)
_ENGLISH: Final = Translator(DEFAULT_LOCALE)


def use_locale(locale: str) -> contextvars.Token[Translator | None]:
    """Make ``locale`` the language of what is rendered next in this task."""
    return _current.set(Translator(locale if locale in LOCALES else DEFAULT_LOCALE))


def reset_locale(token: contextvars.Token[Translator | None]) -> None:
    _current.reset(token)


def gettext(message: str) -> str:
    """The current locale's words for ``message``."""
    return (_current.get() or _ENGLISH).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The current locale's words for ``n`` of something."""
    return (_current.get() or _ENGLISH).ngettext(singular, plural, n)
