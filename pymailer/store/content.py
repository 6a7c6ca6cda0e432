"""
L{pymailer.interfaces.IMessageContent} providers shared by the backends:
over an open file descriptor (a message file, a blob) and over C{bytes}
(the in-memory store, a cached small message).

Both keep their position in Python and read at absolute offsets
(C{os.pread} for files), so L{duplicate}s and concurrent L{readAt}s from
several pool threads never disturb each other.
"""

import os
import threading

from zope.interface import implementer

from pymailer.interfaces import IMessageContent


class _Positioned:
    """C{read}/C{seek}/C{tell} and the context manager, over L{readAt}."""

    _position = 0

    def read(self, size=-1):
        if size is None or size < 0:
            size = max(self.size - self._position, 0)
        data = self.readAt(self._position, size)
        self._position += len(data)
        return data

    def seek(self, offset, whence=0):
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"bad whence {whence!r}")
        if position < 0:
            raise ValueError("negative seek position")
        self._position = position
        return position

    def tell(self):
        return self._position

    def readable(self):
        return True

    def seekable(self):
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@implementer(IMessageContent)
class FileContent(_Positioned):
    """
    Content of an open file descriptor, owned by this object (closed by
    L{close}); a rename or unlink of the file does not disturb it.
    """

    def __init__(self, fd, size=None):
        self._fd = fd
        self._guard = threading.Lock()
        self.size = os.fstat(fd).st_size if size is None else size

    @classmethod
    def open(cls, path):
        """@raise FileNotFoundError: no such file."""
        return cls(os.open(path, os.O_RDONLY | os.O_CLOEXEC))

    def readAt(self, offset, length):
        if self._fd is None:
            raise ValueError("I/O operation on closed message content")
        length = max(min(length, self.size - offset), 0)
        chunks = []
        while length > 0:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def duplicate(self):
        if self._fd is None:
            raise ValueError("I/O operation on closed message content")
        return FileContent(os.dup(self._fd), self.size)

    @property
    def closed(self):
        return self._fd is None

    def close(self):
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@implementer(IMessageContent)
class BytesContent(_Positioned):
    """Content held in memory (immutable C{bytes})."""

    def __init__(self, data):
        self._data = bytes(data)
        self.size = len(self._data)
        self.closed = False

    def readAt(self, offset, length):
        if self.closed:
            raise ValueError("I/O operation on closed message content")
        return self._data[offset:offset + max(length, 0)]

    def duplicate(self):
        return BytesContent(self._data)

    def close(self):
        self.closed = True
