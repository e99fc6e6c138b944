"""The review page's sessions (services/store/review.py): signed cookies that expire, cannot be
forged or moved to another secret, end at logout and when their key leaves the keys file."""

from __future__ import annotations

from ocrstream.streaming.auth import ApiKey
from services.store.review import Sessions

KEY = ApiKey("alice", ("review",), "ab" * 32)


def test_a_session_holds_its_name_and_a_csrf_token_and_ends_at_its_ttl():
    sessions = Sessions(b"s" * 32, ttl_s=3600)
    token, session = sessions.create("alice", KEY.sha256[:16], now=1000.0)
    assert session.name == "alice" and session.expires == 4600 and len(session.csrf) == 64
    assert sessions.get(token, now=4600.0) == session
    assert sessions.get(token, now=4601.0) is None  # crosses its lifetime
    other, again = sessions.create("alice", KEY.sha256[:16], now=1000.0)
    assert other != token and again.csrf != session.csrf  # a nonce per login


def test_forged_tampered_or_foreign_cookies_are_refused():
    sessions = Sessions(b"s" * 32, ttl_s=3600)
    token, _ = sessions.create("alice")
    payload, _, mac = token.rpartition(".")
    forged_name = Sessions(b"s" * 32, 60).create("mallory")[0].split(".")[0]
    assert sessions.get(forged_name + token[token.index("."):]) is None
    assert sessions.get(payload + "." + "0" * 64) is None
    assert Sessions(b"t" * 32, ttl_s=3600).get(token) is None  # another secret
    for junk in (None, "", "a.b", "x" * 2000, "...."):
        assert sessions.get(junk) is None


def test_logout_and_a_removed_key_end_the_session_and_the_revoked_list_is_bounded():
    sessions = Sessions(b"s" * 32, ttl_s=3600, max_revoked=2)
    token, _ = sessions.create("alice", KEY.sha256[:16])
    assert sessions.get(token, {KEY.sha256: KEY}) is not None
    assert sessions.get(token, {}) is None  # the key left the keys file
    assert sessions.get(token, {KEY.sha256: ApiKey("alice", ("query",), KEY.sha256)}) is None  # scope gone
    sessions.drop(token)
    assert sessions.get(token) is None
    for _ in range(2):  # two more logouts cross the bound: the first is forgotten
        sessions.drop(sessions.create("alice")[0])
    assert sessions.get(token) is not None and len(sessions._revoked) == 2
