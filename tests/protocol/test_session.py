"""The sans-IO session: phases, limits, rate limit, error budget."""

from __future__ import annotations

import dataclasses

from gateway.config import Limits
from gateway.errors import CloseCode, ErrorCode, ProtocolViolation
from gateway.model import Position
from gateway.protocol import frames as f
from gateway.protocol import session as s


def make(**kw: object) -> s.Session:
    return s.Session("sid", dataclasses.replace(Limits(), **kw), now=0.0)  # type: ignore[arg-type]


def ready(sess: s.Session) -> s.Session:
    assert isinstance(sess.receive(f.Auth(token="t")), s.Authenticate)
    sess.auth_succeeded("alice")
    return sess


def code_of(action: s.Action) -> str:
    assert isinstance(action, s.Reply) and isinstance(action.frame, f.Error), action
    return action.frame.code


def test_ping_is_answered_in_any_phase() -> None:
    sess = make()
    assert sess.receive(f.Ping(nonce=9)) == s.Reply(f.Pong(nonce=9))


def test_frames_before_auth_are_refused() -> None:
    sess = make()
    for frame in (
        f.Subscribe(channel="g"),
        f.Publish(channel="g", cmid="1", body="x"),
        f.Typing(channel="g"),
    ):
        assert code_of(sess.receive(frame)) == ErrorCode.NOT_AUTHENTICATED


def test_auth_then_ready_then_no_second_auth() -> None:
    sess = make()
    action = sess.receive(f.Auth(token="tok"))
    assert action == s.Authenticate("tok", None)
    assert code_of(sess.receive(f.Subscribe(channel="g"))) == ErrorCode.NOT_AUTHENTICATED
    assert sess.auth_succeeded("alice") == f.Ready(user="alice", session="sid")
    assert code_of(sess.receive(f.Auth(token="x"))) == ErrorCode.ALREADY_AUTHENTICATED


def test_resume_carries_positions() -> None:
    sess = make()
    action = sess.receive(f.Resume(token="t", session="old", positions={"g": Position("e", 3)}))
    assert action == s.Authenticate("t", {"g": Position("e", 3)})


def test_auth_failure_closes_with_4001() -> None:
    sess = make()
    sess.receive(f.Auth(token="t"))
    action = sess.auth_failed("token expired")
    assert action == s.Close(CloseCode.AUTH_FAILED, "token expired")


def test_publish_requires_subscription_and_limits() -> None:
    sess = ready(make(max_body_bytes=10))
    assert code_of(sess.receive(f.Publish(channel="g", cmid="1", body="x"))) == "not_subscribed"
    sess.subscribed("g")
    assert isinstance(sess.receive(f.Publish(channel="g", cmid="1", body="x")), s.DoPublish)
    assert code_of(sess.receive(f.Publish(channel="g", cmid="1", body="é" * 6))) == "too_large"
    assert code_of(sess.receive(f.Typing(channel="other"))) == "not_subscribed"
    assert sess.receive(f.Typing(channel="g")) == s.DoTyping("g")


def test_subscription_cap() -> None:
    sess = ready(make(max_subscriptions=2))
    for ch in ("a", "b"):
        assert isinstance(sess.receive(f.Subscribe(channel=ch)), s.DoSubscribe)
        sess.subscribed(ch)
    assert code_of(sess.receive(f.Subscribe(channel="c"))) == "too_many_subscriptions"
    # resubscribing an existing channel is allowed (replay again)
    assert isinstance(sess.receive(f.Subscribe(channel="a")), s.DoSubscribe)


def test_unsubscribe_unknown_channel_is_harmless() -> None:
    sess = ready(make())
    assert sess.receive(f.Unsubscribe(channel="x")) == s.Reply(f.Unsubscribed(channel="x"))


def test_rate_limit_errors_then_closes() -> None:
    sess = make(rate_per_second=1.0, rate_burst=2, rate_strikes=3)
    assert sess.admit(0.0) is None
    assert sess.admit(0.0) is None
    for _ in range(3):
        assert code_of(sess.admit(0.0)) == "rate_limited"
    assert sess.admit(0.0) == s.Close(CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")


def test_rate_bucket_refills() -> None:
    bucket = s.TokenBucket(rate=10.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.05)
    assert bucket.take(0.2)


def test_error_budget_closes_with_4004() -> None:
    sess = make(error_strikes=2)
    exc = ProtocolViolation("bad", code=ErrorCode.BAD_FRAME)
    assert code_of(sess.decode_failed(exc)) == "bad_frame"
    assert code_of(sess.decode_failed(exc)) == "bad_frame"
    assert sess.decode_failed(exc) == s.Close(CloseCode.TOO_MANY_ERRORS, "too many invalid frames")


def test_rate_strikes_reset_when_a_frame_is_admitted() -> None:
    sess = make(rate_per_second=1.0, rate_burst=1, rate_strikes=2)
    assert sess.admit(0.0) is None
    for t in range(5):
        assert code_of(sess.admit(t + 0.5)) == "rate_limited"
        assert sess.admit(t + 1.0) is None  # a token came back: strikes start over


def test_error_budget_is_per_window() -> None:
    sess = make(error_strikes=2)
    exc = ProtocolViolation("bad", code=ErrorCode.BAD_FRAME)
    sess.admit(0.0)
    sess.decode_failed(exc)
    sess.decode_failed(exc)
    sess.admit(s.ERROR_WINDOW + 1)
    assert code_of(sess.decode_failed(exc)) == "bad_frame"
