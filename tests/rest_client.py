"""One HTTP request to the controller's REST API, for tests."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

# No proxy for 127.0.0.1, whatever http_proxy says.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request(base_url: str, method: str, path: str, body=None, token=None,
            content_type: str = "application/json", raw: bytes | None = None,
            timeout: float = 10) -> tuple[int, str]:
    """(status, body text); `raw` sends bytes as they are instead of `body` as JSON."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                        else None)
    headers = {"Content-Type": content_type} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base_url + path, data=data, headers=headers, method=method)
    try:
        with _http.open(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
