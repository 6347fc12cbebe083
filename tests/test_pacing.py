"""The playout clock on its own (acdg_asgi.call.playout): edge cases the call tests do not reach."""

from __future__ import annotations

import itertools

import pytest

from acdg_asgi.audio import FORMATS
from acdg_asgi.call.playout import PlayoutClock as Playout
from acdg_asgi.protocols import audiocodes as ac

FMT = FORMATS["raw/lpcm16"]  # 640 bytes per 20 ms


def playout(**kwargs: int) -> Playout:
    ids = itertools.count(1)
    return Playout(FMT, **{"lead_ms": 100, "chunk_ms": 20, "max_buffer_ms": 1000, **kwargs},
                   next_stream_id=lambda: str(next(ids)))


def test_an_overflow_that_drops_past_a_finished_turn_sends_nothing_empty() -> None:
    clock = playout(max_buffer_ms=100)  # 3200 bytes
    clock.begin("One.")
    clock.push(bytes(1000))
    clock.end_turn()
    clock.begin("Two.")
    dropped = clock.push(b"\x01" * 4000)  # the buffer keeps the newest 3200 bytes
    assert dropped == 1800  # all of turn one and the start of turn two
    out: list[ac.OutboundMessage] = []
    clock.pull(0.0, out)
    chunks = [m for m in out if isinstance(m, ac.PlayStreamChunk)]
    assert chunks and all(len(c.audio_chunk) == 640 for c in chunks)
    assert all(c.audio_chunk == b"\x01" * 640 for c in chunks)  # none of turn one's audio
    assert [type(m).__name__ for m in out[:2]] == ["PlayStreamStart", "PlayStreamChunk"]
    assert len(chunks) == 5 and clock.pending == 0  # 100 ms: all within the lead


def test_steady_audio_goes_out_as_it_comes() -> None:
    clock = playout()
    out: list[ac.OutboundMessage] = []
    for n in range(5):
        clock.push(bytes(640))
        clock.pull(n * 0.02, out)
        assert clock.pending == 0 and clock.next_deadline() is None
    assert [type(m) for m in out] == [ac.PlayStreamStart] + [ac.PlayStreamChunk] * 5


def side_by_side(fast: Playout, slow: Playout, frame: bytes, times: list[float]) -> list[bool]:
    """Feed ``frame`` at each of ``times`` to ``fast`` by pass_through (push and pull
    where it refuses) and to ``slow`` by push and pull; both must send the same, agree
    on the play head and the next deadline, and count the same once ``fast`` counts what
    it passed (each passed chunk also an agent frame, which push leaves to the call).
    Which frames went straight through."""
    fast_out: list[ac.OutboundMessage] = []
    slow_out: list[ac.OutboundMessage] = []
    for clock, out in ((fast, fast_out), (slow, slow_out)):
        clock.push(frame)
        clock.pull(0.0, out)
    taken = []
    for now in times:
        chunk = fast.pass_through(frame, now)
        taken.append(chunk is not None)
        if chunk is not None:
            fast_out.append(chunk)
        else:
            fast.push(frame)
            fast.pull(now, fast_out)
        slow.push(frame)
        slow.pull(now, slow_out)
        assert fast_out == slow_out and fast.play_head == slow.play_head
        assert fast.next_deadline() == slow.next_deadline()
        fast.count_passed()
        counted = (fast.stats.play_chunks, fast.stats.play_bytes, fast.sent_bytes)
        assert counted == (slow.stats.play_chunks, slow.stats.play_bytes, slow.sent_bytes)
        assert fast.stats.agent_frames == sum(taken)
        assert fast.stats.agent_bytes == sum(taken) * len(frame)
    return taken


@pytest.mark.parametrize(("lead_ms", "chunk_ms"), [(100, 20), (10, 20), (0, 20), (100, 40)])
def test_pass_through_decides_as_push_and_pull_do_for_any_lead_and_chunk(
        lead_ms: int, chunk_ms: int) -> None:
    """Its due test is worked out once from the lead and the chunk's length; it must
    agree with pull's."""
    steps = [0.005] * 12 + [0.2] + [chunk_ms / 1000] * 6  # fast, a gap, real time
    times = list(itertools.accumulate(steps))
    taken = side_by_side(playout(lead_ms=lead_ms, chunk_ms=chunk_ms),
                         playout(lead_ms=lead_ms, chunk_ms=chunk_ms),
                         bytes(FMT.frame_bytes(chunk_ms)), times)
    # The first fast frame is due if it ends within the lead (the first chunk ends at
    # chunk_ms, this one chunk_ms later, 5 ms on); with a lead, later ones reach it.
    assert taken[0] == (lead_ms == 0 or 2 * chunk_ms - 5 <= lead_ms)
    assert all(taken) == (lead_ms == 0)


def test_pass_through_is_push_then_pull_in_the_steady_state() -> None:
    fast, slow = playout(), playout()
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes, one chunk
    assert fast.pass_through(frame, 0.0) is None  # no stream open yet
    # audio at 4x real time: 15 ms further ahead each frame
    taken = side_by_side(fast, slow, frame, [n * 0.005 for n in range(1, 11)])
    assert taken[0] and not all(taken)  # refused once the lead was reached
    assert fast.pass_through(bytes(320), 1.0) is None  # not one whole chunk
