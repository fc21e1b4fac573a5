"""Access rules: the password's comparisons, the peer decision of protected mode, key globs."""

from __future__ import annotations

import base64

import pytest

from proxy.access import Access, glob_regex, is_loopback_peer, key_matcher

SECURED = Access("s3cret", ("*",), protected=False)


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret", True),
        ("bearer   s3cret", True),
        (b"Bearer s3cret", True),
        (basic("default:s3cret"), True),
        (basic(":s3cret"), True),
        (basic("bob:s3cret"), False),
        (basic("default:wrong"), False),
        ("Basic not-base64!", False),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Bearer", False),
        ("s3cret", False),
        ("Digest s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_http_credentials(header, allowed) -> None:
    assert SECURED.authorizes(header) is allowed


def test_without_a_password_every_request_is_authorized() -> None:
    assert Access.open().authorizes(None) and Access.open().authorizes("Bearer x")


@pytest.mark.parametrize(
    ("user", "password", "password_set", "allowed"),
    [
        (None, b"s3cret", True, True),
        (b"default", b"s3cret", True, True),
        (b"bob", b"s3cret", True, False),
        (None, b"wrong", True, False),
        (b"default", b"anything", False, True),  # Redis's `nopass` default user
        (b"bob", b"anything", False, False),
    ],
)
def test_resp_logins(user, password, password_set, allowed) -> None:
    access = SECURED if password_set else Access.open()
    assert access.login(user, password) is allowed


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.10.0.3", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("10.0.0.2", 5000), False),
        (("192.168.1.1", 5000), False),
        (("::ffff:10.0.0.2", 5000, 0, 0), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (None, False),
        ("", False),
    ],
)
def test_protected_mode_admits_only_loopback_peers(peer, loopback) -> None:
    assert is_loopback_peer(peer) is loopback
    assert Access("", ("*",), protected=True).admits(peer) is loopback
    assert Access("", ("*",), protected=False).admits(peer) is True


def test_refusals_are_counted_by_protocol_and_reason() -> None:
    access = Access("s3cret", ("*",), protected=False)
    access.refused("http", "wrong_password", ("10.0.0.2", 1))
    access.refused("http", "wrong_password", "10.0.0.2")
    access.refused("resp", "forbidden_key")
    assert access.refusals == {("http", "wrong_password"): 2, ("resp", "forbidden_key"): 1}


# Redis's stringmatchlen() semantics, case by case (e2e/test_access.py checks random
# patterns against a real redis-server's ACL).
@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("user:*", "user:1", True),
        ("user:*", "user:", True),
        ("user:*", "users", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a[bc]d", "acd", True),
        ("a[^bc]d", "acd", False),
        ("a[^bc]d", "aed", True),
        ("a[b-d]e", "ace", True),
        ("a[d-b]e", "ace", True),  # a reversed range is swapped
        ("a[b-d]e", "aee", False),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("a[\\]]b", "a]b", True),
        ("a[]b", "a]b", False),  # an empty class matches nothing
        ("a[^]b", "axb", True),
        ("a[bc", "ab", True),  # an unclosed class ends with the pattern
        ("a[", "a", False),
        ("a\\", "a\\", True),  # a trailing backslash is itself
        ("*", "anything\nat all", True),
        ("k\xe9", "k\xe9", True),
        (".+", "..", False),  # regex characters are literal
        ("a*b*c", "axxbyyc", True),
        ("a*", "a", True),  # trailing stars match nothing
        ("**", "", False),  # no pattern but `*` itself matches the empty key
        ("?*", "", False),
    ],
)
def test_glob_semantics_are_redis_s(pattern, key, matches) -> None:
    matcher = key_matcher((pattern, "unrelated-x"))
    if pattern == "*":
        assert matcher is None  # every key: no check at all
        return
    assert matcher is not None, glob_regex(pattern.encode())
    assert bool(matcher(key.encode())) is matches


def test_any_of_several_patterns_admits_a_key() -> None:
    matcher = key_matcher(("user:*", "session:?"))
    assert matcher is not None
    assert [bool(matcher(k)) for k in (b"user:1", b"session:1", b"session:12")] == [1, 1, 0]
