"""The review page's sessions (services/store/review.py): bounded count, expiry, unguessable ids."""

from __future__ import annotations

from services.store.review import Sessions


def test_sessions_are_bounded_and_the_oldest_goes_first():
    sessions = Sessions(ttl_s=3600, max_sessions=2)
    first, _ = sessions.create("a")
    second, _ = sessions.create("b")
    assert sessions.get(first).name == "a"
    third, _ = sessions.create("c")  # crosses the bound: the oldest is dropped
    assert sessions.get(first) is None and sessions.get(second).name == "b" and sessions.get(third).name == "c"


def test_an_expired_session_is_gone_and_ids_and_tokens_are_random():
    sessions = Sessions(ttl_s=3600, max_sessions=10)
    sid, session = sessions.create("a")
    other, again = sessions.create("a")
    assert sid != other and session.csrf != again.csrf and len(sid) >= 43 and len(session.csrf) >= 43
    session.expires = 0.0  # as if its lifetime had passed
    assert sessions.get(sid) is None and sessions.get(other) is again
    sessions.drop(other)
    assert sessions.get(other) is None and sessions.get(None) is None and sessions.get("") is None
