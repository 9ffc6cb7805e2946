"""Multi-workspace mode: installing the app through OAuth (Bolt's flow, with slack_sdk's
installation and OAuth state stores on tokenbot's database), and the one place that
gives the Slack client speaking for an organization: in single-workspace mode the one
client of SLACK_BOT_TOKEN, in multi-workspace mode the bot token of the organization's
installation, refreshed when Slack's token rotation is on."""

from __future__ import annotations

import html
import logging
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache
from slack_bolt import BoltResponse
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.sender import failure_reason
from storage import installs
from storage.db import run

if TYPE_CHECKING:
    from bot.deps import Deps

log = logging.getLogger(__name__)

# The bot scopes an installation asks for: those of manifest.yml (a test keeps them equal).
SCOPES = (
    "commands",
    "chat:write",
    "im:write",
    "users:read",
    "usergroups:read",
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
)
# A bot token that expires within this many minutes is refreshed before it is used
# (Slack's token rotation: a token lives 12 hours).
ROTATE_BEFORE_MINUTES = 120
KEEP_BOT = timedelta(seconds=60)  # how long an organization's bot is reused unread
STATE_SECONDS = 600  # how long an install started at /slack/install may take to finish
BOLT_LOGGER = "slack_bolt.tokenbot"  # the Bolt app's logger (bot.app), its OAuth flow's too


class HideInstallCodes(logging.Filter):
    """Bolt logs the code of an install Slack refused; the code is a credential until it
    expires, and the install's failure is logged without it (``Installations._failed``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to fetch oauth.v2.access result")


class ThreadedInstallationStore(AsyncInstallationStore):
    """slack_sdk's SQLAlchemy installation store, its blocking calls run in worker
    threads (the event loop never waits on the database)."""

    def __init__(self, store: SQLAlchemyInstallationStore) -> None:
        self.store = store

    @property
    def logger(self) -> logging.Logger:
        return self.store.logger

    async def async_save(self, installation: Installation) -> None:
        await run(self.store.save, installation)

    async def async_save_bot(self, bot: Bot) -> None:
        await run(self.store.save_bot, bot)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        find = partial(
            self.store.find_bot,
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        return await run(find)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        find = partial(
            self.store.find_installation,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=is_enterprise_install,
        )
        return await run(find)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await run(partial(self.store.delete_bot, enterprise_id=enterprise_id, team_id=team_id))

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        delete = partial(
            self.store.delete_installation,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
        )
        await run(delete)


class ThreadedStateStore(AsyncOAuthStateStore):
    """slack_sdk's SQLAlchemy OAuth state store, in worker threads: each state is used
    once, and only within STATE_SECONDS."""

    def __init__(self, store: SQLAlchemyOAuthStateStore) -> None:
        self.store = store

    @property
    def logger(self) -> logging.Logger:
        return self.store.logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        return await run(self.store.issue)

    async def async_consume(self, state: str) -> bool:
        return await run(self.store.consume, state)


# -- the pages a browser sees at the end of an install -----------------------------------

_WHY = {
    "access_denied": "The installation was cancelled in Slack: nothing was installed.",
    "invalid_browser": (
        "This installation was started in another browser, or too long ago: nothing was "
        "installed. Start again from the install link."
    ),
    "invalid_state": (
        "This installation link has expired or was already used: nothing was installed. "
        "Start again from the install link."
    ),
    "missing_code": "Slack's answer had no installation code: nothing was installed.",
    "invalid_code": (
        "Slack did not accept the installation (the code may have expired or been used "
        "already): nothing was installed. Start again from the install link."
    ),
    "storage_error": "The installation could not be saved. Try again in a moment.",
}


def install_page(title: str, sentence: str, install_path: str | None = None) -> str:
    """A small HTML page for the browser that came back from Slack's install screen."""
    again = ""
    if install_path is not None:
        again = f'<p><a href="{html.escape(install_path)}">Install tokenbot again</a></p>'
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(sentence)}</p>{again}</body></html>"
    )


def failure_sentence(reason: str) -> str:
    """What went wrong, in a sentence, for a failed install's ``reason``."""
    return _WHY.get(reason, f"Slack reported an error ({reason}): nothing was installed.")


def organization_of(installation: Installation | Bot) -> str:
    """The organization an installation serves: the enterprise for an org-wide install."""
    if installation.is_enterprise_install and installation.enterprise_id:
        return str(installation.enterprise_id)
    return str(installation.team_id)


class Installations:
    """The installed organizations' bot tokens (multi-workspace mode)."""

    def __init__(self, deps: Deps) -> None:
        settings = deps.settings
        assert settings.slack_client_id and settings.slack_client_secret
        self.deps = deps
        self.client_id = settings.slack_client_id
        self.client_secret = settings.slack_client_secret.get_secret_value()
        engine = deps.db.engine
        self.store = ThreadedInstallationStore(
            SQLAlchemyInstallationStore(client_id=self.client_id, engine=engine)
        )
        self.states = ThreadedStateStore(
            SQLAlchemyOAuthStateStore(expiration_seconds=STATE_SECONDS, engine=engine)
        )
        # Slack's OAuth methods on the same base URL as every other call.
        self.oauth_client = AsyncWebClient(base_url=settings.slack_api_url)
        self.rotator = AsyncTokenRotator(
            client_id=self.client_id, client_secret=self.client_secret, client=self.oauth_client
        )
        bolt_log = logging.getLogger(BOLT_LOGGER)
        if not any(isinstance(f, HideInstallCodes) for f in bolt_log.filters):
            bolt_log.addFilter(HideInstallCodes())
        # Each organization's bot (None: not installed), read at a database generation:
        # an install or uninstall moves it, here at once and in other replicas within a
        # second, so none is kept past one.
        self.bots: TTLCache[str, tuple[int, Bot | None]] = TTLCache(
            maxsize=10_000, ttl=KEEP_BOT.total_seconds(), timer=self._now
        )
        # Organizations whose requests were refused for want of an installation, so that
        # each is logged once, not once per request.
        self.refused: LRUCache[str, bool] = LRUCache(maxsize=10_000)

    def _now(self) -> float:
        return self.deps.clock().timestamp()

    # -- Bolt's pieces ------------------------------------------------------------------

    def authorize(self) -> AsyncInstallationStoreAuthorize:
        """Bolt's authorization of each request from the installation store, refreshing a
        bot token that is about to expire (token rotation) through the same Slack API."""
        return AsyncInstallationStoreAuthorize(
            logger=logging.getLogger(BOLT_LOGGER),
            installation_store=self.store,
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_rotation_expiration_minutes=ROTATE_BEFORE_MINUTES,
            bot_only=True,
            cache_enabled=True,  # auth.test once per bot token, not once per request
            client=self.oauth_client,
        )

    def oauth_settings(self) -> AsyncOAuthSettings:
        return AsyncOAuthSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scopes=list(SCOPES),
            user_scopes=[],
            install_page_rendering_enabled=False,  # straight on to Slack's install screen
            installation_store=self.store,
            installation_store_bot_only=True,
            token_rotation_expiration_minutes=ROTATE_BEFORE_MINUTES,
            state_store=self.states,
            state_expiration_seconds=STATE_SECONDS,
            callback_options=AsyncCallbackOptions(success=self._installed, failure=self._failed),
            logger=logging.getLogger(BOLT_LOGGER),
        )

    async def _installed(self, args: AsyncSuccessArgs) -> BoltResponse:
        installation = args.installation
        org = organization_of(installation)
        await self.deps.call(
            installs.mark_installed,
            self.deps.db,
            org,
            installation.enterprise_id,
            installation.user_id,
            self.deps.clock(),
        )
        self.bots.pop(org, None)
        self.refused.pop(org, None)
        log.info("installed in %s", org)
        page = install_page(
            "tokenbot is installed",
            "Type /token help in Slack to begin. You can close this page.",
        )
        return _html(200, page)

    async def _failed(self, args: AsyncFailureArgs) -> BoltResponse:
        reason = args.reason
        log.info("an install failed: %s", reason)
        page = install_page(
            "tokenbot was not installed",
            failure_sentence(reason),
            args.settings.install_path,
        )
        return _html(args.suggested_status_code, page)

    # -- the bot token of an organization -----------------------------------------------

    async def bot_for(self, org: str) -> Bot | None:
        """The installation's bot of ``org``, refreshed if it is about to expire; None
        when ``org`` does not have the app installed."""
        generation = self.deps.db.generation  # before the read: a later change wins
        kept = self.bots.get(org)
        if kept is not None and kept[0] == generation:
            bot = kept[1]
        else:
            bot = None
            found = await self.deps.call(installs.installation_of, self.deps.db, org)
            if found is not None:
                bot = await self.store.async_find_bot(
                    enterprise_id=found.enterprise_id,
                    team_id=found.team_id,
                    is_enterprise_install=found.org_wide,
                )
            self.bots[org] = (generation, bot)
        if bot is not None and bot.bot_refresh_token is not None:
            try:
                refreshed = await self.rotator.perform_bot_token_rotation(
                    bot=bot, minutes_before_expiration=ROTATE_BEFORE_MINUTES
                )
            except SlackTokenRotationError as error:
                # Tried again at the next use; the token may still work meanwhile.
                log.warning(
                    "bot token of %s not refreshed (%s)", org, failure_reason(error.api_error)
                )
                return bot
            if refreshed is not None:
                await self.store.async_save_bot(refreshed)
                self.bots[org] = (generation, refreshed)
                bot = refreshed
        return bot

    async def client_for(self, org: str, template: AsyncWebClient) -> AsyncWebClient | None:
        """A client with ``org``'s bot token, on ``template``'s connections and retries;
        None when ``org`` does not have the app installed."""
        bot = await self.bot_for(org)
        if bot is None:
            return None
        return AsyncWebClient(
            token=bot.bot_token,
            base_url=template.base_url,
            session=template.session,
            retry_handlers=template.retry_handlers,
            logger=template.logger,
        )

    async def served(self, template: AsyncWebClient) -> list[tuple[str, AsyncWebClient]]:
        """Every installed organization, each with the client that speaks for it."""
        clients = []
        for found in await self.deps.call(installs.installed, self.deps.db):
            try:
                client = await self.client_for(found.org, template)
            except Exception as error:  # one organization out of reach stops no other
                log.warning("bot token of %s not available (%s)", found.org, failure_reason(error))
                continue
            if client is not None:
                clients.append((found.org, client))
        return clients

    async def uninstalled(self, org: str, why: str) -> None:
        """``org`` removed the app, or its bot token was revoked: its installation is
        deleted and its work stops; its tokens stay, not valid until it installs again."""
        found = await self.deps.call(installs.installation_of, self.deps.db, org)
        if found is not None:
            await self.store.async_delete_all(
                enterprise_id=found.enterprise_id, team_id=found.team_id
            )
        now = self.deps.clock()
        if await self.deps.call(installs.mark_uninstalled, self.deps.db, org, why, now):
            log.info("uninstalled from %s (%s)", org, why)
        self.bots.pop(org, None)

    async def refusal(self, org: str) -> BoltResponse | None:
        """401 for a request from an organization that does not have the app installed,
        logged once per organization; None when it has."""
        if await self.bot_for(org) is not None:
            return None
        if org not in self.refused:
            self.refused[org] = True
            log.warning("refused requests from %s: the app is not installed there", org)
        return BoltResponse(status=401, body="tokenbot is not installed in this workspace")


def _html(status: int, page: str) -> BoltResponse:
    return BoltResponse(
        status=status, body=page, headers={"Content-Type": "text/html; charset=utf-8"}
    )


async def client_for(deps: Deps, client: AsyncWebClient, org: str) -> AsyncWebClient | None:
    """The client that speaks for ``org``: in single-workspace mode ``client`` (the one),
    in multi-workspace mode one with the bot token of ``org``'s installation, or None
    when it does not have the app installed."""
    if deps.installs is None:
        return client
    return await deps.installs.client_for(org, client)
