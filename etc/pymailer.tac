# twistd -ny etc/pymailer.tac   (config path from $PYMAILER_CONFIG; unset: the
# embedded default on 127.0.0.1 high ports, data in ./pymailer-data)
import os

from twisted.application.service import Application
from twisted.internet import reactor

from pymailer import config, logs, service

cfg = config.loadOrDefault(os.environ.get("PYMAILER_CONFIG"))
service.describeListeners(cfg)
application = Application("pymailer")
# The log written in batches off the reactor thread, as `twistd pymailer` does.
logs.fromTwistdCommandLine(service.makeService(cfg), reactor).setServiceParent(application)
