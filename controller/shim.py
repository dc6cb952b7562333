"""Make Ryu 4.34 import on current eventlet.

ryu.app.wsgi imports eventlet.wsgi.ALREADY_HANDLED, which eventlet removed
after 0.30; the old eventlet releases that have it do not import on Python
3.11. Ryu only uses the value as a sentinel returned to eventlet's WSGI
server, so any unique object restores it. Call apply() before anything
imports ryu.app.wsgi.
"""
import warnings

with warnings.catch_warnings():
    # eventlet warns that it is in maintenance mode; Ryu 4.34 needs it anyway.
    warnings.simplefilter("ignore", DeprecationWarning)
    import eventlet.wsgi


def apply() -> None:
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
