"""
``twistd pymailer``: command-line options and the service they make.
"""

import sys

from twisted.python import usage

from pymailer import config as configmodule
from pymailer.logs import LoggingTo, twistdObserver
from pymailer.pg.schema import SchemaError
from pymailer.policy.plugins import UnknownPolicy, checkPolicyNames
from pymailer.service import describeListeners, makeService as buildService


class Options(usage.Options):
    optParameters = [
        ["config", "c", None,
         "Path to the TOML config file (default: an embedded default that "
         "listens on 127.0.0.1 high ports with data in ./pymailer-data)."],
    ]

    def postOptions(self):
        try:
            self.config = configmodule.loadOrDefault(self["config"])
            checkPolicyNames(self.config)
        except (configmodule.ConfigError, UnknownPolicy) as e:
            # One line naming file, key and reason, and no start; a
            # UsageError would bury it under twistd's whole usage text.
            sys.exit(f"pymailer: error: {e}")


def makeService(options):
    from pymailer.serverlock import DataDirectoryBusy
    from pymailer.workers import WorkerSetupError

    describeListeners(options.config)
    try:
        service = buildService(options.config)
    except (SchemaError, WorkerSetupError, DataDirectoryBusy) as e:
        # SchemaError: the shared database cannot be reached, or its schema
        # is not this version's: one line saying what to do (run `pymailer
        # db migrate`).  WorkerSetupError: a listener workers cannot share.
        # DataDirectoryBusy: pymailer migrate-storage is moving the data.
        sys.exit(f"pymailer: error: {e}")
    # twistd's log, written in batches off the reactor thread (pymailer.logs).
    from twisted.internet import reactor

    observer = twistdObserver(getattr(options, "parent", None), reactor)
    return service if observer is None else LoggingTo(service, observer, reactor)
