"""EveFollower: following eve.json by name on real files, through rotation."""
import os
import signal

import pytest

from controller.eve_file import EveFollower


def append(path, data):
    with open(path, "ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def eve(tmp_path):
    return str(tmp_path / "eve.json")


def test_starts_at_the_end_of_an_existing_file(eve):
    append(eve, "yesterday\n")
    f = EveFollower(eve)
    assert f.read() == []
    append(eve, "today\n")
    assert f.read() == ["today"]
    assert f.lines == 1 and f.error is None


def test_from_start_reads_what_is_already_there(eve):
    append(eve, "one\ntwo\n")
    f = EveFollower(eve, from_start=True)
    assert f.read() == ["one", "two"]
    assert f.read() == []


def test_a_file_that_appears_later_is_read_from_its_start(eve):
    f = EveFollower(eve)
    assert f.read() == [] and f.error is None, "absent is not an error"
    append(eve, "first\nsecond\n")
    assert f.read() == ["first", "second"]


def test_a_partial_line_is_completed_on_a_later_call(eve):
    append(eve, "")
    f = EveFollower(eve)
    f.read()
    append(eve, '{"a":')
    assert f.read() == []
    append(eve, '1}\n{"b"')
    assert f.read() == ['{"a":1}']
    append(eve, ":2}\n")
    assert f.read() == ['{"b":2}']


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_from_its_start(eve):
    append(eve, "before\n")
    f = EveFollower(eve, from_start=True)
    assert f.read() == ["before"]
    writer = open(eve, "ab", buffering=0)      # Suricata's handle, kept across the rename
    writer.write(b"late1\n")
    os.rename(eve, eve + ".1")
    writer.write(b"late2\n")                   # after the rename, before our check
    append(eve, "new1\n")
    assert f.read() == ["late1", "late2", "new1"]
    assert f.rotations == 1
    append(eve, "new2\n")
    writer.write(b"never\n")                   # the old file is no longer followed
    writer.close()
    assert f.read() == ["new2"]
    assert f.lines == 5


def test_lines_written_to_the_old_file_until_the_writer_reopens_are_not_lost(eve):
    append(eve, "")
    f = EveFollower(eve)
    f.read()
    os.rename(eve, eve + ".1")
    append(eve, "")                            # logrotate `create`: new and empty
    append(eve + ".1", "x\n")                  # Suricata has not had its SIGHUP yet
    assert f.read() == ["x"] and f.rotations == 0
    append(eve + ".1", "y\n")
    append(eve, "n1\n")                        # it reopened: the old file is done
    assert f.read() == ["y", "n1"] and f.rotations == 1


def test_copytruncate_starts_again_at_zero_and_drops_the_partial_line(eve):
    append(eve, "aaaaaaaaaa\nbbbbbbbbbb\n")
    f = EveFollower(eve, from_start=True)
    assert len(f.read()) == 2
    append(eve, "partial")
    assert f.read() == []
    os.truncate(eve, 0)
    append(eve, "c\n")
    assert f.read() == ["c"], "no 'partial' glued in front"
    assert f.truncations == 1 and f.rotations == 0


def test_truncated_and_regrown_past_the_offset_is_seen_when_the_byte_before_it_changed(eve):
    append(eve, "a\n")
    f = EveFollower(eve, from_start=True)
    assert f.read() == ["a"]                   # offset 2, the byte before it is "\n"
    os.truncate(eve, 0)
    append(eve, "bbbbbb\ncc\n")                # byte 1 is now "b": rewritten
    assert f.read() == ["bbbbbb", "cc"]
    assert f.truncations == 1


def test_truncated_and_regrown_with_the_same_byte_before_the_offset_is_not_seen(eve):
    # The documented limit: neither the size nor the byte before the offset
    # changed, so reading goes on from the old offset and "bbbb" is missed.
    append(eve, "aaaa\n")
    f = EveFollower(eve, from_start=True)
    assert f.read() == ["aaaa"]
    os.truncate(eve, 0)
    append(eve, "bbbb\ncccc\n")
    assert f.read() == ["cccc"]
    assert f.truncations == 0


def test_a_deleted_file_not_recreated_gives_nothing_and_no_error(eve):
    append(eve, "one\n")
    f = EveFollower(eve, from_start=True)
    writer = open(eve, "ab", buffering=0)
    assert f.read() == ["one"]
    os.remove(eve)
    assert f.read() == [] and f.error is None
    writer.write(b"still\n")                   # its writer has not reopened yet
    writer.close()
    assert f.read() == ["still"]
    assert f.read() == [] and f.error is None


def test_an_overlong_line_is_dropped_and_the_next_one_returned(eve):
    append(eve, "")
    f = EveFollower(eve, max_line=10)
    f.read()
    append(eve, "x" * 11 + "\nok\n")
    assert f.read() == ["ok"] and f.overlong == 1
    append(eve, "y" * 10 + "\n")
    assert f.read() == ["y" * 10], "max_line itself is allowed"


def test_an_overlong_line_without_newline_is_not_buffered(eve):
    append(eve, "")
    f = EveFollower(eve, max_line=10)
    f.read()
    append(eve, "x" * 50)
    assert f.read() == [] and f.overlong == 1, "dropped at once"
    assert len(f._buf) <= 10
    append(eve, "x" * 50)
    assert f.read() == [] and f.overlong == 1, "the same line, counted once"
    append(eve, "tail\nok\n")
    assert f.read() == ["ok"] and f.overlong == 1


def test_bytes_that_are_not_utf8_are_replaced(eve):
    append(eve, b'{"a":"\xff\xfe"}\n')
    f = EveFollower(eve, from_start=True)
    assert f.read() == ['{"a":"\ufffd\ufffd"}']


def test_one_call_reads_at_most_one_chunk_and_the_rest_comes_later(eve):
    lines = [f"line{i:05d}" for i in range(100)]   # 10 bytes with the newline
    append(eve, "".join(s + "\n" for s in lines))
    f = EveFollower(eve, from_start=True)
    f.chunk = 256
    got, calls = [], 0
    while len(got) < len(lines) and calls < 100:
        batch = f.read()
        assert len(batch) <= (256 + 9) // 10   # a chunk plus a carried partial
        got += batch
        calls += 1
    assert calls == 4                          # 1000 bytes in chunks of 256
    assert got == lines and f.lines == 100
    assert f.read() == []


def test_the_chunk_bound_holds_across_a_rotation(eve):
    append(eve, "")
    f = EveFollower(eve)
    f.chunk = 16
    f.read()
    append(eve, "old-aaaaa\nold-bbbbb\n")          # 20 bytes: more than one chunk
    os.rename(eve, eve + ".1")
    append(eve, "new\n")
    assert f.read() == ["old-aaaaa"] and f.rotations == 0
    assert f.read() == ["old-bbbbb", "new"] and f.rotations == 1


def test_an_unreadable_path_sets_error_and_reading_recovers(eve):
    # Tests run as root, where chmod 000 does not stop a read: a directory
    # at the path cannot be read either.
    append(eve, "one\n")
    f = EveFollower(eve, from_start=True)
    assert f.read() == ["one"]
    append(eve, "two\n")
    os.rename(eve, eve + ".1")
    os.mkdir(eve)
    assert f.read() == ["two"], "the old file's end is still returned"
    assert f.error and "not a regular file" in f.error
    assert f.read() == [] and f.error
    os.rmdir(eve)
    append(eve, "three\n")
    assert f.read() == ["three"] and f.error is None


def test_a_fifo_at_the_path_does_not_block(eve):
    def hung(signum, frame):
        raise TimeoutError("opening the FIFO blocked")

    os.mkfifo(eve)
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        f = EveFollower(eve)
        assert f.read() == [] and "not a regular file" in f.error
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_read_after_close_returns_nothing(eve):
    append(eve, "")
    f = EveFollower(eve)
    f.read()
    f.close()
    append(eve, "after\n")
    assert f.read() == []
    f.close()                                  # twice is harmless
