"""Single sign-on (OpenID Connect) in a real browser, against a fake provider at the edge."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Page, expect
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditLog, StaffUser
from app.embedded import EmbeddedPostgres
from app.web.oidc import Attempt, SsoRefused, authorization_url
from tests.conftest import TEMPLATE
from tests.console_harness import WebServer, serve, sign_in
from tests.factories import make_settings
from tests.oidc_fake import FakeOidc

SSO_BUTTON = "Sign in with single sign-on"


@pytest.fixture(scope="module")
def oidc() -> Iterator[FakeOidc]:
    fake = FakeOidc().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
async def web(pg: EmbeddedPostgres, oidc: FakeOidc) -> AsyncIterator[WebServer]:
    """The service with single sign-on through the fake provider (claim names its own)."""
    settings = oidc.settings() | {
        "oidc_role_claim": "groups",
        "oidc_centre_claim": "centre",
        "oidc_dispatcher_value": "responder-dispatch",
        "oidc_coordinator_value": "responder-admin",
    }
    async with serve(pg, template=TEMPLATE, **settings) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_provider(oidc: FakeOidc) -> None:
    oidc.claims, oidc.tamper = {}, {}


async def _sso(page: Page, web: WebServer) -> None:
    await page.goto(web.url("/console"))
    await page.get_by_role("link", name=SSO_BUTTON).click()


async def test_a_dispatcher_signs_in_by_sso_and_lands_on_the_board_of_their_centre(
    page: Page, web: WebServer, oidc: FakeOidc
) -> None:
    oidc.claims = {
        "sub": "u-1",
        "email": "Sid.Dispatch@example.org",
        "name": "Sid Dispatch",
        "groups": ["staff", "responder-dispatch"],
        "centre": "west",
    }
    await _sso(page, web)
    await expect(page.get_by_role("heading", name="Incidents of west")).to_be_visible()
    await expect(page.get_by_text("Sid Dispatch").first).to_be_visible()

    async def created(session: AsyncSession) -> tuple[StaffUser, list[AuditLog]]:
        user = (
            await session.execute(
                select(StaffUser).where(StaffUser.email == "sid.dispatch@example.org")
            )
        ).scalar_one()
        audit = await session.execute(select(AuditLog).where(AuditLog.actor_user_id == user.id))
        return user, list(audit.scalars())

    user, audit = await web.run(created)
    assert (user.role, user.centre, user.password_hash) == ("dispatcher", "west", None)
    assert [(row.action, row.details) for row in audit] == [("staff.login", {"method": "sso"})]

    # The provider moves them to another centre: the next sign-in follows it.
    await page.get_by_role("button", name="Sign out").click()
    oidc.claims["centre"] = "east"
    await page.get_by_role("link", name=SSO_BUTTON).click()
    await expect(page.get_by_role("heading", name="Incidents of east")).to_be_visible()


@pytest.mark.parametrize(
    "tamper", [{"aud": "another-client"}, {"nonce": "replayed"}, {"iss": "http://evil"}]
)
async def test_an_id_token_for_another_client_or_sign_in_is_refused(
    page: Page, web: WebServer, oidc: FakeOidc, tamper: dict[str, str]
) -> None:
    oidc.claims = {"email": "eve@example.org", "groups": "responder-admin"}
    oidc.tamper = tamper
    await _sso(page, web)
    await expect(page.get_by_role("alert")).to_have_text(
        "The single sign-on answer could not be verified."
    )
    await page.goto(web.url("/console/account"))
    await expect(page).to_have_url(re.compile(r"/console/login"))


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (
            {"email": "nobody@example.org", "groups": ["staff"]},
            "Your single sign-on account has no role in the Responder console.",
        ),
        (
            {"email": "lost@example.org", "groups": "responder-dispatch"},
            "Your single sign-on account is a dispatcher without a dispatch centre.",
        ),
        (
            {"email": "unverified@example.org", "email_verified": False, "groups": "staff"},
            "Single sign-on did not give a verified e-mail address.",
        ),
    ],
)
async def test_claims_without_a_valid_role_or_centre_are_refused_with_a_clear_page(
    page: Page, web: WebServer, oidc: FakeOidc, claims: dict[str, object], message: str
) -> None:
    oidc.claims = claims
    await _sso(page, web)
    await expect(page.get_by_role("alert")).to_have_text(message)
    email = claims["email"]
    found = await web.run(
        lambda session: session.scalar(select(StaffUser).where(StaffUser.email == email))
    )
    assert found is None


async def test_a_callback_without_the_browsers_state_is_refused(page: Page, web: WebServer) -> None:
    await page.goto(web.url("/console/login/sso/callback?code=stolen&state=guessed"))
    await expect(page.get_by_role("alert")).to_have_text(
        "This single sign-on answer does not belong to this browser. Sign in again."
    )


async def test_the_break_glass_coordinator_still_signs_in_with_a_password(
    page: Page, web: WebServer
) -> None:
    coordinator = await web.staff(name="Break Glass")
    await sign_in(page, web, coordinator, path="/console/account")
    await expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    await expect(page.get_by_text("Break Glass").first).to_be_visible()


def test_an_issuer_without_its_client_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="RESPONDER_OIDC_CLIENT_ID"):
        make_settings(oidc_issuer="https://login.example.org")


async def test_an_unreachable_provider_is_a_clear_502_never_a_500() -> None:
    settings = make_settings(
        oidc_issuer="http://127.0.0.1:9", oidc_client_id="c", oidc_client_secret="s"
    )
    with pytest.raises(SsoRefused) as refused:
        await authorization_url(settings, Attempt.start("/console"))
    assert refused.value.status == 502
