"""The lab's command log (lab/sim/lab-shell, one file per SSH command) as the tests read it: every
record exactly, a record still being written not yet, and anything else refused, never skipped."""

from __future__ import annotations

import pytest

from lab.hoststate import parse_command_record

ODD = "printf '%s\\n' 'tab\there'\necho 'größer → ok'"


def record(command: str, stamp: str = "1796158470.769220") -> bytes:
    body = command.encode()
    return f"{stamp}\t{len(body)}\t".encode() + body + b"\n"


def test_a_record_gives_its_time_and_the_command_byte_for_byte() -> None:
    assert parse_command_record(record(ODD)) == (1796158470.76922, ODD)
    assert parse_command_record(record("")) == (1796158470.76922, "")
    # Bytes that are not UTF-8 are shown, not refused.
    assert parse_command_record(b"1.5\t3\ta\xffb\n") == (1.5, "a\ufffdb")


def test_a_record_still_being_written_is_not_read_yet() -> None:
    whole = record(ODD * 200)  # > 4 KiB: bash writes it in pieces
    for cut in (0, 5, 18, 20, 4096, len(whole) - 1):
        assert parse_command_record(whole[:cut]) is None, cut


@pytest.mark.parametrize(
    "data",
    [
        record("true") + b"extra",  # longer than its length says
        b"1.5\t4\ttrue!",  # no newline where the record ends
        b"soon\t4\ttrue\n",  # no time
        b"1.5\t-1\t\n",  # no length
        b"x" * 100,  # no head at all
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a command record"):
        parse_command_record(data)
