"""Runs moto's S3 server, taking the same options as `moto_server`, with one request at
a time inside moto.

moto evaluates If-Match / If-None-Match and then stores the object as two steps, while
its server answers each connection on its own thread, so two conditional PUTs arriving
together can both pass the check. S3 checks and writes in one step. Holding one lock
around each request, until its whole answer is built, gives back that guarantee.
"""

import sys
import threading

import moto.server

_lock = threading.Lock()
_run_simple = moto.server.run_simple


def _one_request_at_a_time(app):
    def serialized(environ, start_response):
        with _lock:
            return list(app(environ, start_response))

    return serialized


def _run_simple_serialized(host, port, app, **options):
    _run_simple(host, port, _one_request_at_a_time(app), **options)


moto.server.run_simple = _run_simple_serialized

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
