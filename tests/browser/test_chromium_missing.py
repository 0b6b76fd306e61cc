"""Without Debian's Chromium the browser tests fail, saying which packages to install; they never skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import ChromiumMissingError, chromium_executable


def test_without_chromium_the_tests_fail_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(ChromiumMissingError, match=r"apt-get install chromium"):
        chromium_executable(tmp_path / "chromium")
    (tmp_path / "not-executable").write_text("")
    with pytest.raises(ChromiumMissingError, match=r"no Chromium at"):
        chromium_executable(tmp_path / "not-executable")
