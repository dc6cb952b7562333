"""Who may change the policy through the REST API (pure, no Ryu).

Reads are open. Writes need `Authorization: Bearer <token>` when a token is
configured; with none the API is read-only, unless it was started with
--insecure-rest (for a lab on a closed machine), which is logged at start
and on every write. IDS alerts may come with a token of their own
(--alert-token-file): an IDS may raise alerts without being allowed to
change the policy. The write token is good for alerts too.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

TOKEN_ENV = "VGUARD_API_TOKEN"
MIN_TOKEN_LENGTH = 16
HOW_TO = ("start the controller with --token-file PATH or the environment "
          f"variable {TOKEN_ENV} set to a secret of at least {MIN_TOKEN_LENGTH} characters")


class TokenError(ValueError):
    pass


def load_token(token_file: str | None, environ=os.environ) -> str | None:
    """The token from the file if one is named, else from the environment;
    None if neither. TokenError if it is unusable."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenError(f"token file {token_file}: cannot read: "
                             f"{getattr(e, 'strerror', None) or e}") from None
        where = f"token file {token_file}"
    else:
        token = environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        where = TOKEN_ENV
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"{where}: the token must have at least {MIN_TOKEN_LENGTH} "
                         "characters")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise TokenError(f"{where}: the token must be printable ASCII without spaces")
    return token


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


@dataclass(frozen=True)
class WriteAuth:
    token: str | None
    insecure: bool = False
    alert_token: str | None = None

    def check(self, authorization: str | None) -> Refusal | None:
        """None if a write with this Authorization header may go ahead."""
        return self._check(authorization, (self.token,))

    def check_alert(self, authorization: str | None) -> Refusal | None:
        """None if alerts with this Authorization header may be taken."""
        return self._check(authorization, (self.alert_token, self.token))

    def _check(self, authorization: str | None, tokens) -> Refusal | None:
        tokens = [t for t in tokens if t is not None]
        if not tokens:
            if self.insecure:
                return None
            return Refusal(403, f"the API is read-only: no token is configured; {HOW_TO} "
                                "(or --insecure-rest on a closed lab machine)")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return Refusal(401, "this write needs the header 'Authorization: Bearer <token>'")
        given_bytes = given.strip().encode("utf-8", "replace")
        # Constant time, and every token compared: how much of a guess
        # matches, or which token it matched, must not show in the timing.
        matched = [hmac.compare_digest(given_bytes, t.encode()) for t in tokens]
        if not any(matched):
            return Refusal(401, "the bearer token is not valid")
        return None
