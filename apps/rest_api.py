"""REST API served by the controller process (Ryu WSGI, JSON)."""
from __future__ import annotations

import json

from webob import Response

from controller import shim

shim.apply()

from ryu.app.wsgi import ControllerBase, route  # noqa: E402

API = "/api/v1"


def _json(body, status=200) -> Response:
    return Response(status=status, content_type="application/json", charset="utf-8",
                    body=json.dumps(body, indent=1, sort_keys=True).encode())


class RestApi(ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.switch_app = data["switch_app"]

    @route("health", API + "/health", methods=["GET"])
    def health(self, req, **_):
        return _json(self.switch_app.status())

    @route("counters", API + "/counters", methods=["GET"])
    def counters(self, req, **_):
        return _json(self.switch_app.counters())
