"""A release is checked before anyone trusts it: a wheel of the storegate distribution, its version, nothing else."""

from __future__ import annotations

import hashlib

import pytest

from storegate.wheels import WheelError, inspect_wheel, is_release_version, safe_member
from tests.hub.releases.wheels import fake_wheel

LIMIT = 1024 * 1024


def test_a_wheel_of_storegate_gives_its_version_size_and_sha256() -> None:
    data = fake_wheel("0.1.0+test2")
    info = inspect_wheel(data, max_bytes=LIMIT)
    assert (info.version, info.size, info.sha256) == ("0.1.0+test2", len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"PK\x03\x04 not really a zip", "not a wheel"),
        (fake_wheel(name="evil_tool"), "distribution 'evil_tool'"),
        (fake_wheel(members={"../../etc/cron.d/x": b"* * * * * root sh"}), "outside its directory"),
        (fake_wheel(members={"/etc/passwd": b"root"}), "outside its directory"),
        (fake_wheel(metadata="Metadata-Version: 2.1\nName: storegate\n\n"), "no Name or no Version"),
        (fake_wheel(metadata="Metadata-Version: 2.1\nName: storegate\nVersion: ../1.0\n\n"), "cannot name a release"),
        (fake_wheel("1.0/../../x"), "outside its directory"),
    ],
)
def test_what_is_not_a_storegate_release_is_refused_in_words(data: bytes, words: str) -> None:
    with pytest.raises(WheelError, match=words):
        inspect_wheel(data, max_bytes=LIMIT)


def test_a_version_that_cannot_name_a_directory_is_refused() -> None:
    data = fake_wheel(metadata="Metadata-Version: 2.1\nName: storegate\nVersion: 1.0 ; rm -rf\n\n")
    with pytest.raises(WheelError, match="cannot name a release"):
        inspect_wheel(data, max_bytes=LIMIT)
    assert not is_release_version("..")
    assert not is_release_version("1/2")
    assert is_release_version("0.1.0+test1")


def test_an_oversized_release_is_refused_before_it_is_opened() -> None:
    with pytest.raises(WheelError, match="at most 1,024"):
        inspect_wheel(b"x" * 1025, max_bytes=1024)


@pytest.mark.parametrize("name", ["a/../b", "C:/x", "a\\b", "", "/abs", "a//b"])
def test_unsafe_member_names(name: str) -> None:
    assert not safe_member(name)
