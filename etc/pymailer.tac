# twistd -ny etc/pymailer.tac   (config path from $PYMAILER_CONFIG; unset: the
# embedded default on 127.0.0.1 high ports, data in ./pymailer-data)
import os

from twisted.application.service import Application

from pymailer import config, service

cfg = config.loadOrDefault(os.environ.get("PYMAILER_CONFIG"))
service.describeListeners(cfg)
application = Application("pymailer")
service.makeService(cfg).setServiceParent(application)
