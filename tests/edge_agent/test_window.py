"""The send window, with a hand-driven clock: what to send, when to send it again."""

from __future__ import annotations

from edge_agent.window import PROBE_TIMEOUT_S, SendWindow


def window(*, acked_seq: int = 0, max_in_flight: int = 10, probe_events: int | None = None) -> SendWindow:
    return SendWindow(
        acked_seq=acked_seq, max_in_flight=max_in_flight, ack_timeout_s=5.0, now=0.0, probe_events=probe_events
    )


def test_publishing_fills_the_window_and_acks_open_it() -> None:
    w = window()
    assert (w.next_after, w.room(), w.in_flight) == (0, 10, 0)
    assert w.published([1, 2, 3, 4, 5, 6], now=1.0) == 0
    assert (w.next_after, w.room(), w.in_flight) == (6, 4, 6)
    w.published([7, 8, 9, 10], now=1.0)
    assert w.room() == 0
    assert w.acknowledged(6, now=2.0)
    assert (w.acked_seq, w.next_after, w.room()) == (6, 10, 6)


def test_in_flight_counts_events_not_seq_numbers() -> None:
    w = window()
    # Seqs 4..99 were evicted: three events in flight, not 100.
    w.published([1, 2, 100], now=0.0)
    assert (w.in_flight, w.room()) == (3, 7)


def test_stale_and_duplicate_acks_change_nothing() -> None:
    w = window()
    w.published([1, 2, 3], now=0.0)
    assert w.acknowledged(3, now=1.0)
    assert not w.acknowledged(3, now=2.0)
    assert not w.acknowledged(1, now=2.0)
    assert w.acked_seq == 3


def test_an_ack_beyond_the_cursor_moves_the_start_of_sending() -> None:
    w = window()
    w.published([1, 2], now=0.0)
    w.request_rewind()
    assert w.rewind_if_due(now=1.0) == "connected"
    # The hub had more than this connection sent (from before a restart).
    assert w.acknowledged(5, now=1.0)
    assert (w.next_after, w.in_flight, w.room()) == (5, 0, 10)


def test_the_ack_timeout_rewinds_and_counts_resends() -> None:
    w = window()
    w.published([1, 2, 3], now=10.0)
    assert w.ack_deadline() == 15.0
    assert w.stalled_for(14.9) is None
    assert w.rewind_if_due(now=14.9) is None
    assert w.stalled_for(15.0) == 5.0
    assert w.rewind_if_due(now=15.0) == "ack timeout"
    assert (w.next_after, w.in_flight) == (0, 0)
    assert w.published([1, 2, 3], now=15.0) == 3
    assert w.published([4], now=15.0) == 0
    assert w.ack_deadline() == 20.0


def test_the_ack_clock_starts_with_the_first_event_of_an_empty_window() -> None:
    w = window()
    assert w.ack_deadline() is None
    assert w.stalled_for(100.0) is None  # nothing in flight: nothing to wait for
    w.published([1], now=100.0)
    assert w.ack_deadline() == 105.0
    w.published([2], now=103.0)  # a later event does not push the deadline
    assert w.ack_deadline() == 105.0
    w.acknowledged(1, now=104.0)  # progress does
    assert w.ack_deadline() == 109.0


def test_the_hub_counts_as_silent_across_rewinds_until_it_acknowledges() -> None:
    w = window()
    assert w.hub_silent_for(50.0) is None
    w.published([1, 2], now=10.0)
    assert w.rewind_if_due(now=15.0) == "ack timeout"
    w.published([1, 2], now=15.0)
    assert w.hub_silent_for(16.0) == 6.0
    w.acknowledged(1, now=17.0)
    assert w.hub_silent_for(18.0) == 1.0
    w.acknowledged(2, now=18.0)
    assert w.hub_silent_for(30.0) is None


def test_a_rewind_on_connect_resends_everything_unacknowledged_first() -> None:
    w = window(acked_seq=20)
    w.published([21, 22, 23], now=0.0)
    w.acknowledged(21, now=0.5)
    w.request_rewind()
    w.heard_from_hub()
    assert w.rewind_if_due(now=1.0) == "connected"
    assert w.rewind_if_due(now=1.0) is None  # once per request
    assert (w.next_after, w.in_flight) == (21, 0)
    assert w.published([22, 23, 24], now=1.0) == 2


def test_after_a_connect_one_batch_probes_with_a_growing_timeout_until_the_hub_answers() -> None:
    w = window(max_in_flight=100, probe_events=10)
    w.request_rewind()
    assert w.rewind_if_due(now=0.0) == "connected"
    assert (w.room(), w.ahead_room()) == (10, 0)
    w.published(list(range(1, 11)), now=0.0)
    assert w.room() == 0
    timeouts = []
    now = 0.0
    for _ in range(5):
        deadline = w.ack_deadline()
        assert deadline is not None
        timeouts.append(deadline - now)
        now = deadline
        assert w.rewind_if_due(now) == "ack timeout"
        w.published(list(range(1, 11)), now=now)
    assert timeouts == [PROBE_TIMEOUT_S, 1.0, 2.0, 4.0, 5.0]  # capped at ack_timeout_s
    w.heard_from_hub()
    assert (w.room(), w.ahead_room()) == (90, 50)
    assert w.ack_deadline() == now + 5.0


def test_after_an_ack_timeout_one_batch_probes_every_ack_timeout() -> None:
    w = window(max_in_flight=100, probe_events=10)
    w.published(list(range(1, 51)), now=0.0)
    assert w.rewind_if_due(now=5.0) == "ack timeout"
    assert (w.probing, w.room(), w.ack_deadline()) == (True, 10, None)
    w.published(list(range(1, 11)), now=5.0)
    assert w.ack_deadline() == 10.0
    assert w.rewind_if_due(now=10.0) == "ack timeout"
    w.published(list(range(1, 11)), now=10.0)
    assert w.ack_deadline() == 15.0
    w.acknowledged(10, now=11.0)
    w.heard_from_hub()
    assert (w.probing, w.room()) == (False, 100)


def test_high_priority_events_go_ahead_within_their_own_budget_and_are_not_sent_twice() -> None:
    w = window(max_in_flight=10)
    w.published(list(range(1, 11)), now=0.0)  # the backlog fills the window
    assert (w.room(), w.ahead_room()) == (0, 5)
    assert w.published_ahead([50, 70], now=0.0) == 0
    assert (w.skip_through, w.ahead_room(), w.in_flight) == (70, 3, 12)
    # The hub's through_seq passes the backlog: the ahead events stay in flight until it passes them too.
    assert w.acknowledged(10, now=1.0)
    assert (w.room(), w.ahead_room()) == (10, 3)
    assert w.acknowledged(70, now=2.0)
    assert (w.room(), w.ahead_room(), w.in_flight) == (10, 5, 0)


def test_a_rewind_sends_ahead_events_again_and_counts_them_as_resends() -> None:
    w = window(max_in_flight=10)
    w.published([1, 2], now=0.0)
    w.published_ahead([9], now=0.0)
    assert w.rewind_if_due(now=5.0) == "ack timeout"
    assert (w.skip_through, w.in_flight) == (0, 0)
    assert w.published_ahead([9], now=5.0) == 1
    assert w.published([1, 2, 3], now=5.0) == 2


def test_release_frees_the_window_without_acknowledging_and_published_through_stays() -> None:
    w = window()
    w.published([1, 2, 3, 4, 5], now=0.0)
    w.published_ahead([9], now=0.0)
    w.published([6, 7, 8, 10], now=0.0)
    assert (w.room(), w.published_through) == (1, 10)
    assert w.release(7, now=1.0) == 5  # whole flights only: the one through 5; those ending at 9 and 10 stay
    assert (w.acked_seq, w.in_flight, w.next_after) == (0, 5, 10)
    assert w.release(10, now=2.0) == 5
    assert (w.acked_seq, w.in_flight, w.room(), w.published_through) == (0, 0, 10, 10)
    assert w.stalled_for(100.0) is None  # nothing in flight: no resend of what was released
