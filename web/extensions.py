"""Flask extensions, created once here and bound to an app in :func:`web.app.create_app`."""

from flask_sock import Sock

sock = Sock()
