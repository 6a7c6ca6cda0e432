"""
The durability helpers (L{pymailer.fsutil}) on a real file system: the
queue's takeover count and every envelope rewrite go through them.
"""

import fcntl
import os

import pytest

from pymailer.fsutil import openDurablyWritten, writeDurably


def test_openDurablyWrittenKeepsTheNewFileLocked(tmp_path):
    """
    The file that replaces an envelope holds the new content and stays
    locked by its writer under its name (another runner's claim fails),
    with no temporary file left: otherwise two queue runners could deliver
    the same taken-over message at once.
    """
    path = tmp_path / "ID.json"
    writeDurably(str(path), b"old")
    fd = openDurablyWritten(str(path), b"new", locked=True)
    try:
        assert path.read_bytes() == b"new"
        other = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["ID.json"]


def test_failedWriteLeavesTheOldFile(tmp_path):
    """
    A write that fails half-way leaves the old content under the name and
    no temporary file: otherwise a crash mid-rewrite loses the envelope or
    fills the queue directory with debris.
    """
    path = tmp_path / "ID.json"
    writeDurably(str(path), b"old")
    with pytest.raises(TypeError):
        openDurablyWritten(str(path), None, locked=True)  # not bytes: fails in the write
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["ID.json"]
