"""The small web endpoint behind the signed Approve / Reject links (aiohttp).

GET /approve?t=<token> (or /reject) verifies the link and shows a confirmation page: rollout,
clusters and host count, requester (the workflow's `progress` query), the whole update command and
every script (the rollout's input, in scrollable blocks, never cut), the digest the approvals
sign, approver and action, with one button. A GET never decides anything (mail scanners and link
previews open links).
POST /approve (or /reject) with the token in the form body sends the workflow's `approve` /
`reject` update (through the rollout facade, `bot.rollouts`) as the approver the link names, so
the workflow's own rules hold: approver list, no self-approval, decided once. The token in the
body is what makes the POST unforgeable (CSRF): only someone holding the link can make it.
Under a policy the decision is signed by this server's key (`bot.signing.signed_decision`, for the
digest computed here from the rollout's input and this server's inventory); a rollout whose
digest differs from the one the page showed, or from the workflow's, is refused (409).

Tampered links are refused with 403, malformed ones with 400, expired or reused ones with 410, and
none of them changes anything. A link is used once: after a POST the workflow answered, its nonce
is remembered (in memory) and a second POST says so.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from temporalio.client import Client

from activities.notify.links import Action, LinkClaims, LinkError, LinkSigner
from bot.rollouts import Problem, RolloutError, Rollouts
from bot.settings import Settings
from bot.signing import Signer, digest_here, signed_decision
from workflows.models import ApprovalDecision, Phase, RolloutInput, RolloutProgress
from workflows.repair import REPAIR_SHOWN

log = logging.getLogger("patchpilot.approval_web")

SIGNER_KEY: web.AppKey[LinkSigner] = web.AppKey("signer", LinkSigner)
ROLLOUTS_KEY: web.AppKey[Rollouts] = web.AppKey("rollouts", Rollouts)
USED_KEY: web.AppKey[UsedLinks] = web.AppKey("used_links")
SIGNING_KEY: web.AppKey[DecisionSigning] = web.AppKey("decision_signing")


@dataclass(frozen=True)
class DecisionSigning:
    """How this server signs the decisions it verified: `signer` (None: no policy, decisions go
    unsigned, as in development) and the inventory the digest is computed from."""

    signer: Signer | None = None
    inventory: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> DecisionSigning:
        """Signing as `settings` say: under a policy with PATCHPILOT_SIGNING_KEY, as
        PATCHPILOT_SIGNER (default "links"); else unsigned."""
        if settings.policy is None or settings.signing_key is None:
            return cls()
        return cls(Signer(settings.signing_key, settings.signer or "links"), settings.inventory)


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
pre {{ max-height: 24rem; overflow: auto; background: #f6f8fa; padding: .6rem; margin: .2rem 0;
       white-space: pre; border: 1px solid #d0d7de; }}
code {{ word-break: break-all; }}
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
    rollouts = request.app[ROLLOUTS_KEY]
    try:
        progress = await rollouts.progress(claims.rollout_id, steps=False)
        rollout = await rollouts.request(claims.rollout_id)
    except RolloutError as error:
        if error.problem == Problem.NOT_FOUND:
            return _error("Unknown rollout", f"rollout {claims.rollout_id} was not found", 410)
        log.warning("progress query for %s failed: %s", claims.rollout_id, error)
        return _error("Try again later", UNREACHABLE, 503)
    facts = _facts(progress, claims, _verb(action)) + what_runs(rollout, progress.digest)
    decided = _decided(progress)
    if decided:
        return _page("Already decided", f"{facts}<p id='reason'>{html.escape(decided)}</p>")
    signing = request.app[SIGNING_KEY]
    if signing.signer is not None:
        try:
            mismatch = _digest_mismatch(rollout, progress, signing)
        except RolloutError as error:
            mismatch = str(error)
        if mismatch:
            return _page("Cannot be decided here", f"{facts}{_refusal(mismatch)}", 409)
    form = (
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="t" value="{html.escape(request.query["t"])}">'
        f'<input type="hidden" name="digest" value="{html.escape(progress.digest or "")}">'
        '<p><label for="comment">Comment (optional)</label><br>'
        '<textarea id="comment" name="comment" rows="2" maxlength="2000"></textarea></p>'
        f'<button type="submit" id="confirm" class="{action}">{_verb(action)} this rollout</button>'
        "</form>"
    )
    return _page(f"{_verb(action)} rollout {progress.rollout_id}?", facts + form)


SCRIPT_FIELDS = (
    ("preDowntimeScripts", "Before downtime", "pre_downtime_scripts"),
    ("preUpdateScripts", "Before the update", "pre_update_scripts"),
    ("postUpdateScripts", "After the update", "post_update_scripts"),
)


def what_runs(rollout: RolloutInput, digest: str | None) -> str:
    """The whole update command and every script, each in a scrollable <pre> (never cut), and
    the digest the approvals sign (ids: command, script-<field>-<n>, digest)."""
    profile = f" (update profile {rollout.update_profile})" if rollout.update_profile else ""
    parts = [
        f"<dl><dt>Update command{html.escape(profile)}, run on every host as written</dt>"
        f"<dd><pre id='command'>{html.escape(rollout.update_command)}</pre></dd>"
    ]
    for key, title, attribute in SCRIPT_FIELDS:
        scripts = getattr(rollout, attribute)
        for index, script in enumerate(scripts, 1):
            parts.append(
                f"<dt>{title}, script {index} of {len(scripts)}</dt>"
                f"<dd><pre id='script-{key}-{index}'>{html.escape(script)}</pre></dd>"
            )
    if not any(getattr(rollout, attribute) for _, _, attribute in SCRIPT_FIELDS):
        parts.append("<dt>Scripts</dt><dd id='scripts'>none</dd>")
    if rollout.repair_interrupted_dpkg:  # a command too (workflows/repair.py)
        parts.append(f"<dt>Repair</dt><dd id='repair'>{html.escape(REPAIR_SHOWN)}</dd>")
    parts.append(
        "<dt>Digest of exactly what runs (your approval is signed for it)</dt>"
        f"<dd><code id='digest'>{html.escape(digest or 'none: no approval policy')}</code></dd>"
        "</dl>"
    )
    return "".join(parts)


def _refusal(reason: str) -> str:
    return (
        f'<p class="error" id="reason">{html.escape(reason)}</p>'
        "<p>Nothing was changed. Ask the requester for a new request.</p>"
    )


def _digest_mismatch(
    rollout: RolloutInput, progress: RolloutProgress, signing: DecisionSigning
) -> str | None:
    """Why a decision cannot be signed for what the workflow reports (its digest differs from
    the one computed here), or None. Raises RolloutError when it cannot be computed."""
    here = digest_here(rollout, signing.inventory)
    if progress.digest is not None and progress.digest != here:
        return (
            f"refusing to sign: the rollout reports {progress.digest}, but what it runs with "
            f"this server's inventory is {here} (the inventory changed since the request, or "
            "the rollout was tampered with)"
        )
    return None


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
    shown = form.get("digest")
    rollouts = request.app[ROLLOUTS_KEY]
    try:
        decision = await _decision(
            request.app[SIGNING_KEY],
            rollouts,
            claims,
            (comment if isinstance(comment, str) else "").strip()[:2000],
            shown if isinstance(shown, str) else None,
        )
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


async def _decision(
    signing: DecisionSigning,
    rollouts: Rollouts,
    claims: LinkClaims,
    comment: str,
    shown: str | None,
) -> ApprovalDecision:
    """The link's decision; under a policy signed by this server for the digest computed here,
    refused (RolloutError REFUSED) when that is not the digest the page showed (`shown`)."""
    if signing.signer is None:
        return ApprovalDecision(approver=claims.approver, comment=comment)
    decision, _, digest = await signed_decision(
        rollouts,
        claims.rollout_id,
        claims.approver,
        comment,
        approve=claims.action == "approve",
        signer=signing.signer,
        inventory=signing.inventory,
    )
    if shown and shown != digest:
        raise RolloutError(
            f"refusing to sign: the page you confirmed showed {shown}, but the rollout now runs "
            f"{digest}; open the link again to see what runs now",
            Problem.REFUSED,
        )
    return decision


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
    app: web.Application,
    client: Client,
    signer: LinkSigner,
    used: UsedLinks | None = None,
    signing: DecisionSigning | None = None,
) -> None:
    """Mount the link pages on an existing aiohttp app (e.g. the Slack bot's HTTP server).

    `used` remembers used links; pass one to share it between apps (default: a fresh one).
    `signing`: how decisions are signed (`DecisionSigning.of(settings)`; default unsigned).
    """
    app[ROLLOUTS_KEY] = Rollouts(client)
    app[SIGNER_KEY] = signer
    app[USED_KEY] = used or UsedLinks()
    app[SIGNING_KEY] = signing or DecisionSigning()
    for action in ("approve", "reject"):
        show, decide = _handlers(action)  # type: ignore[arg-type]
        app.router.add_get(f"/{action}", show)
        app.router.add_post(f"/{action}", decide)


def create_app(
    client: Client,
    signer: LinkSigner,
    used: UsedLinks | None = None,
    signing: DecisionSigning | None = None,
) -> web.Application:
    """The link pages as an app of their own, with security headers and GET /healthz."""
    app = web.Application(middlewares=[_headers], client_max_size=64 * 1024)
    add_routes(app, client, signer, used, signing)

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
    app = create_app(client, signer, signing=DecisionSigning.of(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port or settings.approval_port).start()
    log.info("approval links served on %s:%s", host, port or settings.approval_port)
    return runner
