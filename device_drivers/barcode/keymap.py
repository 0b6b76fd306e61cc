"""Keyboard-wedge scanners: Linux key events to the scanned text. Pure: (type, code, value) in, text out.

The scanner "types" each code as USB HID key presses in the keyboard country it is
programmed for; the kernel reports them as ``EV_KEY`` events with the codes of
``linux/input-event-codes.h``. We decode those codes ourselves, so the result does not
depend on any console or desktop keyboard layout. Shift gives the shifted character;
Ctrl + a key gives its ASCII control character (the scanners' "Control + ASCII" mode, so
FNC1 arrives as Ctrl+] = GS); a profile may name one more key the scanner is programmed
to send for FNC1. Enter (main or keypad) ends a code. Caps Lock is ignored: the device is
grabbed, so the host's lock state never applies to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

EV_KEY: Final = 1
KEY_UP: Final = 0
KEY_DOWN: Final = 1
KEY_REPEAT: Final = 2

# linux/input-event-codes.h (stable kernel ABI).
KEY_CODES: Final[dict[str, int]] = {
    "KEY_ESC": 1,
    **{f"KEY_{digit}": code for code, digit in enumerate("1234567890", start=2)},
    "KEY_MINUS": 12,
    "KEY_EQUAL": 13,
    "KEY_BACKSPACE": 14,
    "KEY_TAB": 15,
    **{f"KEY_{letter}": code for code, letter in enumerate("QWERTYUIOP", start=16)},
    "KEY_LEFTBRACE": 26,
    "KEY_RIGHTBRACE": 27,
    "KEY_ENTER": 28,
    "KEY_LEFTCTRL": 29,
    **{f"KEY_{letter}": code for code, letter in enumerate("ASDFGHJKL", start=30)},
    "KEY_SEMICOLON": 39,
    "KEY_APOSTROPHE": 40,
    "KEY_GRAVE": 41,
    "KEY_LEFTSHIFT": 42,
    "KEY_BACKSLASH": 43,
    **{f"KEY_{letter}": code for code, letter in enumerate("ZXCVBNM", start=44)},
    "KEY_COMMA": 51,
    "KEY_DOT": 52,
    "KEY_SLASH": 53,
    "KEY_RIGHTSHIFT": 54,
    "KEY_KPASTERISK": 55,
    "KEY_LEFTALT": 56,
    "KEY_SPACE": 57,
    "KEY_CAPSLOCK": 58,
    **{f"KEY_F{n}": 58 + n for n in range(1, 11)},
    "KEY_NUMLOCK": 69,
    "KEY_SCROLLLOCK": 70,
    "KEY_KP7": 71,
    "KEY_KP8": 72,
    "KEY_KP9": 73,
    "KEY_KPMINUS": 74,
    "KEY_KP4": 75,
    "KEY_KP5": 76,
    "KEY_KP6": 77,
    "KEY_KPPLUS": 78,
    "KEY_KP1": 79,
    "KEY_KP2": 80,
    "KEY_KP3": 81,
    "KEY_KP0": 82,
    "KEY_KPDOT": 83,
    "KEY_F11": 87,
    "KEY_F12": 88,
    "KEY_KPENTER": 96,
    "KEY_RIGHTCTRL": 97,
    "KEY_KPSLASH": 98,
    "KEY_RIGHTALT": 100,
}
_K: Final = KEY_CODES

# US keyboard: key code -> (unshifted, shifted).
_US_ROWS: Final = (
    ("1234567890-=", "!@#$%^&*()_+", 2),
    ("qwertyuiop[]", "QWERTYUIOP{}", 16),
    ("asdfghjkl;'`", 'ASDFGHJKL:"~', 30),
    ("\\zxcvbnm,./", "|ZXCVBNM<>?", 43),
)
US_LAYOUT: Final[dict[int, tuple[str, str]]] = {
    **{start + i: (plain[i], shifted[i]) for plain, shifted, start in _US_ROWS for i in range(len(plain))},
    _K["KEY_SPACE"]: (" ", " "),
    _K["KEY_KPASTERISK"]: ("*", "*"),
    _K["KEY_KPMINUS"]: ("-", "-"),
    _K["KEY_KPPLUS"]: ("+", "+"),
    _K["KEY_KPDOT"]: (".", "."),
    _K["KEY_KPSLASH"]: ("/", "/"),
    # Keypad digits: scanners in "numeric keypad" mode send digits there.
    **{_K[f"KEY_KP{d}"]: (str(d), str(d)) for d in range(10)},
}
LAYOUTS: Final[dict[str, dict[int, tuple[str, str]]]] = {"us": US_LAYOUT}

_SHIFT: Final = frozenset({_K["KEY_LEFTSHIFT"], _K["KEY_RIGHTSHIFT"]})
_CTRL: Final = frozenset({_K["KEY_LEFTCTRL"], _K["KEY_RIGHTCTRL"]})
_ENTER: Final = frozenset({_K["KEY_ENTER"], _K["KEY_KPENTER"]})
# Keys that change no text and are not errors: locks and Alt.
_IGNORED: Final = frozenset(
    {_K["KEY_CAPSLOCK"], _K["KEY_NUMLOCK"], _K["KEY_SCROLLLOCK"], _K["KEY_LEFTALT"], _K["KEY_RIGHTALT"]}
)
GS: Final = "\x1d"


@dataclass(frozen=True, slots=True)
class KeyedCode:
    """One code the scanner typed, up to Enter; ``unknown_keys`` are codes with no character."""

    text: str
    unknown_keys: tuple[int, ...] = ()


class KeyDecoder:
    """Turns a scanner's key events into the codes it typed; one instance per device."""

    def __init__(self, *, layout: str = "us", gs_key: int | None = None, max_length: int = 512) -> None:
        self._layout = LAYOUTS[layout]
        self._gs_key = gs_key
        self._max_length = max_length
        self._chars: list[str] = []
        self._unknown: list[int] = []
        self._held: set[int] = set()

    @property
    def pending(self) -> bool:
        """Whether part of a code has been typed and its Enter has not come yet."""
        return bool(self._chars or self._unknown)

    def reset(self) -> None:
        """Drop a partial code and the modifier state (after the device went away)."""
        self._chars.clear()
        self._unknown.clear()
        self._held.clear()

    def feed(self, event_type: int, code: int, value: int) -> KeyedCode | None:
        """Take one input event; returns the code when this event was its Enter."""
        if event_type != EV_KEY:
            return None  # EV_SYN, EV_MSC (scancodes), LEDs: nothing typed
        if code in _SHIFT or code in _CTRL:
            if value == KEY_UP:
                self._held.discard(code)
            else:
                self._held.add(code)
            return None
        if value != KEY_DOWN:
            return None  # releases, and autorepeat a scanner never means
        if code in _ENTER:
            return self._finish()
        if code in _IGNORED:
            return None
        char = self._char(code)
        if char is None:
            self._unknown.append(code)
        elif len(self._chars) <= self._max_length:  # one over the limit is enough to reject it as too long
            self._chars.append(char)
        return None

    def _char(self, code: int) -> str | None:
        if code == self._gs_key:
            return GS
        pair = self._layout.get(code)
        if pair is None:
            return None
        if self._held & _CTRL:
            return _control(pair, shifted=bool(self._held & _SHIFT))
        return pair[1] if self._held & _SHIFT else pair[0]

    def _finish(self) -> KeyedCode | None:
        if not self.pending:
            return None
        keyed = KeyedCode(text="".join(self._chars), unknown_keys=tuple(self._unknown))
        self._chars.clear()
        self._unknown.clear()
        return keyed


def _control(pair: tuple[str, str], *, shifted: bool) -> str | None:
    # Ctrl + key is the ASCII control of the key's character in 0x40-0x5F: Ctrl+] is GS (0x1D),
    # Ctrl+M is CR, Ctrl+Shift+6 (^) is RS; a key without one types nothing known.
    for char in (pair[1], pair[0]) if shifted else (pair[0],):
        code = ord(char.upper())
        if 0x40 <= code <= 0x5F:
            return chr(code - 0x40)
    return None


def key_code(name: str) -> int:
    """The code of a key by its input-event-codes name (``KEY_F8``); KeyError for an unknown name."""
    return KEY_CODES[name]
