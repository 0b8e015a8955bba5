"""Single sign-on with OpenID Connect: the authorization-code flow with PKCE, state and nonce.

The provider is found by its discovery document; the browser is sent to its
authorization endpoint with a random ``state`` (bound to this browser by a cookie),
a ``nonce`` (bound into the ID token) and a PKCE S256 challenge; the code that comes
back is exchanged at the token endpoint with the verifier and the client secret.
The ID token is checked with joserfc (signature against the provider's JWKS,
issuer, audience, expiry, nonce) and httpx makes the calls to the provider. Why not
Authlib's client: see docs/console.md.

The attempt (state, nonce, verifier, where to go afterwards) lives in an
``HttpOnly`` cookie under the callback's path for ten minutes: it is secret from
everyone but this browser, and the state it carries is what ties the callback to
the browser that started it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.core.settings import Settings
from app.web.i18n import _
from app.web.pages import CONSOLE

SSO_PATH = f"{CONSOLE}/login/sso"
CALLBACK_PATH = f"{SSO_PATH}/callback"
ATTEMPT_COOKIE = "responder_console_sso"
ATTEMPT_TTL_S = 600
PROVIDER_TIMEOUT_S = 10
ID_TOKEN_ALGORITHMS = ["RS256", "ES256", "PS256"]


class SsoRefused(Exception):
    """The sign-in cannot go on; ``message`` is for the person, ``status`` the page's."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Attempt:
    state: str
    nonce: str
    verifier: str
    next_path: str

    @classmethod
    def start(cls, next_path: str) -> Attempt:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next_path=next_path,
        )

    def cookie_value(self) -> str:
        """URL-safe tokens hold no ``.``, so the path may come last and hold any."""
        return ".".join((self.state, self.nonce, self.verifier, self.next_path))

    @classmethod
    def from_cookie(cls, raw: str | None) -> Attempt | None:
        parts = (raw or "").split(".", 3)
        return cls(*parts) if len(parts) == 4 and all(parts[:3]) else None

    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Identity:
    """Who the provider vouches for, in the terms of a staff user."""

    email: str
    name: str
    role: str
    centre: str | None


def redirect_uri(settings: Settings) -> str:
    return settings.console_origin + CALLBACK_PATH


def _unreachable() -> SsoRefused:
    return SsoRefused(_("The single sign-on provider cannot be reached. Try again."), 502)


def _provider_json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise _unreachable()
    try:
        body = response.json()
    except ValueError as bad:
        raise _unreachable() from bad
    if not isinstance(body, dict):
        raise _unreachable()
    return body


async def _discovery(client: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    issuer = settings.oidc_issuer or ""
    url = issuer + "/.well-known/openid-configuration"
    document = _provider_json(await client.get(url))
    if document.get("issuer") != issuer:
        raise _unreachable()
    return document


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=PROVIDER_TIMEOUT_S)


async def authorization_url(settings: Settings, attempt: Attempt) -> str:
    """Where the browser goes to sign in at the provider."""
    try:
        async with _client() as client:
            document = await _discovery(client, settings)
    except httpx.HTTPError as failed:
        raise _unreachable() from failed
    query = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": redirect_uri(settings),
        "scope": "openid email profile",
        "state": attempt.state,
        "nonce": attempt.nonce,
        "code_challenge": attempt.challenge(),
        "code_challenge_method": "S256",
    }
    return f"{document['authorization_endpoint']}?{urlencode(query)}"


def _verified_claims(
    id_token: str, keys: dict[str, Any], *, settings: Settings, nonce: str, now: datetime
) -> dict[str, Any]:
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=ID_TOKEN_ALGORITHMS)  # type: ignore[arg-type]
        jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=60,
            iss={"essential": True, "value": settings.oidc_issuer or ""},
            aud={"essential": True, "value": settings.oidc_client_id or ""},
            nonce={"essential": True, "value": nonce},
            exp={"essential": True},
        ).validate(token.claims)
    except (JoseError, ValueError) as refused:
        raise SsoRefused(_("The single sign-on answer could not be verified.")) from refused
    return token.claims


async def _id_token_claims(
    settings: Settings, attempt: Attempt, code: str, now: datetime
) -> dict[str, Any]:
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else ""
    try:
        async with _client() as client:
            document = await _discovery(client, settings)
            answer = _provider_json(
                await client.post(
                    document["token_endpoint"],
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": redirect_uri(settings),
                        "code_verifier": attempt.verifier,
                    },
                    auth=(settings.oidc_client_id or "", secret),
                ),
            )
            keys = _provider_json(await client.get(document["jwks_uri"]))
    except httpx.HTTPError as failed:
        raise _unreachable() from failed
    id_token = answer.get("id_token")
    if not isinstance(id_token, str):
        raise _unreachable()
    return _verified_claims(id_token, keys, settings=settings, nonce=attempt.nonce, now=now)


def _claim_values(claims: dict[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    values = value if isinstance(value, list) else [value]
    return [item for item in values if isinstance(item, str)]


def identity_of(claims: dict[str, Any], settings: Settings) -> Identity:
    """Role and centre from the configured claims; a refusal a person can act on."""
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is not True:
        raise SsoRefused(_("Single sign-on did not give a verified e-mail address."))
    roles = _claim_values(claims, settings.oidc_role_claim)
    if settings.oidc_coordinator_value in roles:
        role = "coordinator"
    elif settings.oidc_dispatcher_value in roles:
        role = "dispatcher"
    else:
        raise SsoRefused(_("Your single sign-on account has no role in the Responder console."))
    centres = _claim_values(claims, settings.oidc_centre_claim)
    centre = centres[0].strip() if centres else None
    if role == "dispatcher" and not centre:
        raise SsoRefused(
            _("Your single sign-on account is a dispatcher without a dispatch centre.")
        )
    name = claims.get("name")
    return Identity(
        email=email, name=name if isinstance(name, str) else email, role=role, centre=centre
    )


async def identity_of_code(
    settings: Settings, attempt: Attempt, code: str, now: datetime
) -> Identity:
    return identity_of(await _id_token_claims(settings, attempt, code, now), settings)
