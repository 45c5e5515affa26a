"""The rollout's Vault token, seen from the workflow: revoked by VaultCleanupActivity when the
rollout ends in any way (success, failure, rejection, cancel), with any replacement a worker made
for it. The token itself never enters the workflow; its accessor (which cannot authenticate) does,
so any worker can revoke it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.local_activity import run_local
    from workflows.models import (
        RolloutInput,
        StepResult,
        VaultCleanupInput,
        VaultPreflightInput,
        VaultPreflightResult,
    )
    from workflows.policies import LOOKUP, VAULT_RETRY

# Its own retry: a Vault that is down for a few minutes still gets the revocation; after that the
# token expires at its TTL anyway, unrenewed.
CLEANUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)


async def check_vault(rollout: RolloutInput, probe_host: str | None) -> str | None:
    """Run VaultClientActivity (Vault reachable, auth valid, a key readable, the rollout's child
    token made); returns the token's accessor, None when the rollout brought its own token.
    Raises ActivityError when the preflight fails.

    A local activity (a few short calls to Vault, no heartbeat). Should its worker be lost before
    the workflow task completes, the next worker's rerun finds the token the first run recorded
    in the rollout's KV entry and makes none (activities/vault_handoff.py)."""
    checked = await run_local(
        names.VAULT_CLIENT,
        VaultPreflightInput(
            vault_address=rollout.vault_address,
            vault_token=rollout.vault_token,
            secret_path_prefix=rollout.secret_path_prefix,
            probe_host=probe_host,
        ),
        result_type=VaultPreflightResult,
        start_to_close_timeout=LOOKUP,
        retry_policy=VAULT_RETRY,
    )
    return checked.token_accessor


async def revoke_rollout_token(
    rollout_id: str, vault_address: str | None, accessor: str | None
) -> None:
    """Run VaultCleanupActivity for the rollout; a failure is logged, never the rollout's result."""
    try:
        await workflow.execute_activity(
            names.VAULT_CLEANUP,
            VaultCleanupInput(
                rollout_id=rollout_id, vault_address=vault_address, token_accessor=accessor
            ),
            result_type=StepResult,
            start_to_close_timeout=LOOKUP,
            retry_policy=CLEANUP_RETRY,
        )
    except ActivityError as error:
        workflow.logger.warning("revoking the rollout's Vault token failed: %s", error)
