"""
The queue contract (L{tests.queue_contract}) run against every backend:
the file spool (production) and the memory spool (the fake tests use).
"""

import os

import pytest

from pymailer.queue.memory import MemorySpool
from pymailer.queue.spool_files import Spool
from tests.queue_contract import QueueContract


class TestFileSpool(QueueContract):
    @pytest.fixture
    def spool(self, tmp_path):
        return Spool(tmp_path / "queue")

    def reopen(self, spool):
        """Another process's spool object on the same directories."""
        return Spool(spool.root)

    def killClaimer(self, spool, claim):
        """The process died: the kernel drops its lock."""
        os.close(claim.fd)


class TestMemorySpool(QueueContract):
    @pytest.fixture
    def spool(self):
        return MemorySpool()

    def reopen(self, spool):
        """One process: the same object is the whole queue."""
        return spool

    def killClaimer(self, spool, claim):
        spool.abandon(claim)
