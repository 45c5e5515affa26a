"""The small web endpoint behind the signed Approve / Reject links (aiohttp).

GET /approve?t=<token> (or /reject) verifies the link and shows a confirmation page: rollout,
clusters, requester (read with the workflow's `progress` query), approver and action, with one
button. A GET never decides anything (mail scanners and link previews open links).
POST /approve (or /reject) with the token in the form body sends the workflow's `approve` /
`reject` update (through the rollout facade, `bot.rollouts`) as the approver the link names, so
the workflow's own rules hold: approver list, no self-approval, decided once. The token in the
body is what makes the POST unforgeable (CSRF): only someone holding the link can make it.

Tampered links are refused with 403, malformed ones with 400, expired or reused ones with 410, and
none of them changes anything. A link is used once: after a POST the workflow answered, its nonce
is remembered (in memory) and a second POST says so.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from temporalio.client import Client

from activities.notify.links import Action, LinkClaims, LinkError, LinkSigner
from bot.rollouts import Problem, RolloutError, Rollouts
from bot.settings import Settings
from workflows.models import ApprovalDecision, Phase, RolloutProgress

log = logging.getLogger("patchpilot.approval_web")

SIGNER_KEY: web.AppKey[LinkSigner] = web.AppKey("signer", LinkSigner)
ROLLOUTS_KEY: web.AppKey[Rollouts] = web.AppKey("rollouts", Rollouts)
USED_KEY: web.AppKey[UsedLinks] = web.AppKey("used_links")

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class UsedLinks:
    """Nonces of links already used, in memory (the workflow's "decided once" is the durable
    rule; this only makes a second POST of the same link say so plainly)."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}  # nonce -> expiry (forgotten once the link expired anyway)

    def claim(self, claims: LinkClaims) -> bool:
        """Mark the link used; False when it already was."""
        now = time.time()
        if len(self._used) > 10_000:
            self._used = {n: e for n, e in self._used.items() if e > now}
        if claims.nonce in self._used:
            return False
        self._used[claims.nonce] = claims.expires
        return True

    def used(self, claims: LinkClaims) -> bool:
        """True when the link was already used."""
        return claims.nonce in self._used

    def release(self, claims: LinkClaims) -> None:
        """Make the link usable again (the decision did not reach the workflow)."""
        self._used.pop(claims.nonce, None)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{html.escape(title)} · PatchPilot</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem;
       color: #1d1d1f; }}
dt {{ font-weight: 600; margin-top: .5rem; }} dd {{ margin-left: 0; }}
button {{ font-size: 1.1rem; padding: .6rem 1.4rem; border: 0; border-radius: .4rem;
          color: white; cursor: pointer; }}
.approve {{ background: #1a7f37; }} .reject {{ background: #cf222e; }}
.error {{ color: #cf222e; }} .ok {{ color: #1a7f37; }}
textarea {{ width: 100%; }}
</style></head>
<body><h1 id="title">{html.escape(title)}</h1>
{body}
</body></html>"""
    return web.Response(text=document, status=status, content_type="text/html", charset="utf-8")


def _error(title: str, reason: str, status: int) -> web.Response:
    return _page(
        title,
        f'<p class="error" id="reason">{html.escape(reason)}</p>'
        "<p>Nothing was changed. Ask the requester for a new request, or use "
        "<code>patchpilot approve|reject</code>.</p>",
        status,
    )


def _verify(request: web.Request, token: str | None, action: Action) -> LinkClaims:
    if not token:
        raise LinkError("this link has no token (was it cut short by the mail client?)", 400)
    claims = request.app[SIGNER_KEY].verify(token)
    if claims.action != action:
        raise LinkError("this link does not belong to this page; it was altered", 403)
    return claims


def _decided(progress: RolloutProgress) -> str | None:
    if progress.phase == Phase.AWAITING_APPROVAL:
        return None
    if progress.decided_by:
        return (
            f"This rollout was already decided by {progress.decided_by} "
            f"(now: {progress.phase.value}); the decision is final."
        )
    if progress.phase in (Phase.RESOLVING,):
        return "This rollout is not waiting for an approval yet; try again in a moment."
    return f"This rollout is no longer waiting for an approval (now: {progress.phase.value})."


def _not_accepted(reason: str) -> web.Response:
    """409: the workflow's rules refused the decision (or someone decided first)."""
    return _page("Not accepted", f'<p class="error" id="reason">{html.escape(reason)}</p>', 409)


async def _ended(rollouts: Rollouts, claims: LinkClaims, refused: RolloutError) -> web.Response:
    """The answer when the rollout no longer runs: who decided, if anyone, else how it ended
    (`refused` is the facade's answer to the decision, which already says how)."""
    if refused.problem == Problem.NOT_FOUND:
        return _error("Unknown rollout", f"rollout {claims.rollout_id} was not found", 410)
    try:
        progress = await rollouts.progress(claims.rollout_id, steps=False)
    except RolloutError:  # no worker to answer the query: the facade's sentence must do
        return _error("No longer possible", str(refused), 410)
    if progress.decided_by:
        return _not_accepted(_decided(progress) or "")
    return _error(
        "No longer possible",
        f"rollout {claims.rollout_id} is no longer waiting for a decision "
        f"(now: {progress.phase.value})",
        410,
    )


Handler = Callable[[web.Request], Awaitable[web.Response]]
LINK_REFUSED = "This link cannot be used"
UNREACHABLE = "PatchPilot cannot reach Temporal right now"


def _handlers(action: Action) -> tuple[Handler, Handler]:
    """The GET (confirmation page) and POST (decision) handlers of /approve or /reject."""

    async def show(request: web.Request) -> web.Response:
        return await _show(request, action)

    async def decide(request: web.Request) -> web.Response:
        return await _decide(request, action)

    return show, decide


def _verb(action: Action) -> str:
    return "Approve" if action == "approve" else "Reject"


async def _show(request: web.Request, action: Action) -> web.Response:
    try:
        claims = _verify(request, request.query.get("t"), action)
    except LinkError as refused:
        return _error(LINK_REFUSED, str(refused), refused.status)
    if request.app[USED_KEY].used(claims):
        return _error(LINK_REFUSED, "this link was already used", 410)
    try:
        progress = await request.app[ROLLOUTS_KEY].progress(claims.rollout_id, steps=False)
    except RolloutError as error:
        if error.problem == Problem.NOT_FOUND:
            return _error("Unknown rollout", f"rollout {claims.rollout_id} was not found", 410)
        log.warning("progress query for %s failed: %s", claims.rollout_id, error)
        return _error("Try again later", UNREACHABLE, 503)
    facts = _facts(progress, claims, _verb(action))
    decided = _decided(progress)
    if decided:
        return _page("Already decided", f"{facts}<p id='reason'>{html.escape(decided)}</p>")
    form = (
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="t" value="{html.escape(request.query["t"])}">'
        '<p><label for="comment">Comment (optional)</label><br>'
        '<textarea id="comment" name="comment" rows="2" maxlength="2000"></textarea></p>'
        f'<button type="submit" id="confirm" class="{action}">{_verb(action)} this rollout</button>'
        "</form>"
    )
    return _page(f"{_verb(action)} rollout {progress.rollout_id}?", facts + form)


def _facts(progress: RolloutProgress, claims: LinkClaims, verb: str) -> str:
    """What the approver is deciding: rollout, clusters, requester, approver, action."""
    clusters = ", ".join(c.name for c in progress.clusters) or "(resolving)"
    hosts = sum(len(c.hosts) for c in progress.clusters)
    return (
        f"<dl><dt>Rollout</dt><dd id='rollout'>{html.escape(progress.rollout_id)}</dd>"
        f"<dt>Clusters</dt><dd id='clusters'>{html.escape(clusters)} ({hosts} hosts)</dd>"
        f"<dt>Requested by</dt><dd id='requester'>{html.escape(progress.requester_email)}</dd>"
        f"<dt>You, the approver</dt><dd id='approver'>{html.escape(claims.approver)}</dd>"
        f"<dt>Action</dt><dd id='action'>{verb}</dd></dl>"
    )


async def _decide(request: web.Request, action: Action) -> web.Response:
    form = await request.post()
    token = form.get("t")
    try:
        claims = _verify(request, token if isinstance(token, str) else None, action)
    except LinkError as refused:
        return _error(LINK_REFUSED, str(refused), refused.status)
    used = request.app[USED_KEY]
    if not used.claim(claims):
        return _error(LINK_REFUSED, "this link was already used", 410)
    comment = form.get("comment")
    decision = ApprovalDecision(
        approver=claims.approver,
        comment=(comment if isinstance(comment, str) else "").strip()[:2000],
    )
    rollouts = request.app[ROLLOUTS_KEY]
    try:
        result = await rollouts.decide(claims.rollout_id, decision, approve=action == "approve")
    except RolloutError as error:
        if error.problem == Problem.REFUSED:
            return _not_accepted(str(error))
        if error.problem in (Problem.ENDED, Problem.NOT_FOUND):
            return await _ended(rollouts, claims, error)
        used.release(claims)  # Temporal did not answer: the link may be tried again
        log.warning("update %s on %s failed: %s", action, claims.rollout_id, error)
        return _error("Try again later", UNREACHABLE, 503)
    log.info("rollout %s: %s through a signed link", claims.rollout_id, result)
    return _page(
        "Done",
        f'<p class="ok" id="reason">Rollout {html.escape(claims.rollout_id)}: '
        f"{html.escape(result)}.</p>",
    )


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CSP
    return response


def add_routes(
    app: web.Application, client: Client, signer: LinkSigner, used: UsedLinks | None = None
) -> None:
    """Mount the link pages on an existing aiohttp app (e.g. the Slack bot's HTTP server).

    `used` remembers used links; pass one to share it between apps (default: a fresh one).
    """
    app[ROLLOUTS_KEY] = Rollouts(client)
    app[SIGNER_KEY] = signer
    app[USED_KEY] = used or UsedLinks()
    for action in ("approve", "reject"):
        show, decide = _handlers(action)  # type: ignore[arg-type]
        app.router.add_get(f"/{action}", show)
        app.router.add_post(f"/{action}", decide)


def create_app(
    client: Client, signer: LinkSigner, used: UsedLinks | None = None
) -> web.Application:
    """The link pages as an app of their own, with security headers and GET /healthz."""
    app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
    add_routes(app, client, signer, used)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/healthz", health)
    return app


async def start_link_server(
    client: Client, settings: Settings, host: str = "0.0.0.0", port: int | None = None
) -> web.AppRunner | None:
    """Serve the link pages on PATCHPILOT_APPROVAL_PORT when PATCHPILOT_PUBLIC_URL and
    PATCHPILOT_LINK_SECRET are set (None otherwise); the caller cleans the runner up.

    For `patchpilot bot`: `links = await start_link_server(client, settings, host)`.
    """
    if settings.link_secret is None or not settings.public_url:
        return None
    signer = LinkSigner(settings.link_secret.get_secret_value().encode())
    runner = web.AppRunner(create_app(client, signer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port or settings.approval_port).start()
    log.info("approval links served on %s:%s", host, port or settings.approval_port)
    return runner
