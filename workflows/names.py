"""Activity names (the spec's, kept exactly) and the per-host step names shown in progress."""

from __future__ import annotations

SEND_APPROVAL_REQUEST = "SendApprovalRequestActivity"
GET_CLUSTER_HOSTS = "GetClusterHostsActivity"
CHECK_HOST_PRECONDITIONS = "CheckHostPreconditionsActivity"
SEND_START_NOTIFICATION = "SendStartNotificationActivity"
RUN_PRE_DOWNTIME_SCRIPTS = "RunPreDowntimeScriptsActivity"
SET_MAINTENANCE_MODE = "SetMaintenanceModeActivity"
STOP_SERVICES = "StopServicesActivity"
WAIT_FOR_WORKLOAD_DRAIN = "WaitForWorkloadDrainActivity"
RUN_PRE_UPDATE_SCRIPTS = "RunPreUpdateScriptsActivity"
PERFORM_UPDATE = "PerformUpdateActivity"
START_SERVICES = "StartServicesActivity"
RUN_POST_UPDATE_SCRIPTS = "RunPostUpdateScriptsActivity"
CHECK_SERVICE_HEALTH = "CheckServiceHealthActivity"
SEND_SUCCESS_NOTIFICATION = "SendSuccessNotificationActivity"
SEND_FAILURE_ALERT = "SendFailureAlertActivity"
# Beyond the spec's 15:
VAULT_CLIENT = "VaultClientActivity"
VAULT_CLEANUP = "VaultCleanupActivity"
CLEAR_MAINTENANCE_MODE = "ClearMaintenanceModeActivity"
SEND_ROLLOUT_SUMMARY = "SendRolloutSummaryActivity"
REBOOT_HOST = "RebootHostActivity"
WAIT_FOR_HOST_BOOT = "WaitForHostBootActivity"
INSPECT_HOST = "InspectHostActivity"
SEND_WAVE_NOTIFICATION = "SendWaveNotificationActivity"
PLAN_HOST_NOTICES = "PlanHostNoticesActivity"
# The approval policy (issue 13): the worker's own policy answers, with its own keys.
RESOLVE_APPROVAL_POLICY = "ResolveApprovalPolicyActivity"
VERIFY_DECISION = "VerifyDecisionActivity"
VERIFY_STANDING_GRANTS = "VerifyStandingGrantsActivity"
TRUST_ACTIVITIES = (RESOLVE_APPROVAL_POLICY, VERIFY_DECISION, VERIFY_STANDING_GRANTS)
# Health gates (issue 18): registered only on a worker with PATCHPILOT_PROMETHEUS_URL.
CHECK_ALERT_GATE = "CheckAlertGateActivity"
QUERY_GATE = "QueryGateActivity"
GATE_ACTIVITIES = (CHECK_ALERT_GATE, QUERY_GATE)

SPEC_ACTIVITIES = (
    SEND_APPROVAL_REQUEST,
    GET_CLUSTER_HOSTS,
    CHECK_HOST_PRECONDITIONS,
    SEND_START_NOTIFICATION,
    RUN_PRE_DOWNTIME_SCRIPTS,
    SET_MAINTENANCE_MODE,
    STOP_SERVICES,
    WAIT_FOR_WORKLOAD_DRAIN,
    RUN_PRE_UPDATE_SCRIPTS,
    PERFORM_UPDATE,
    START_SERVICES,
    RUN_POST_UPDATE_SCRIPTS,
    CHECK_SERVICE_HEALTH,
    SEND_SUCCESS_NOTIFICATION,
    SEND_FAILURE_ALERT,
)
ALL_ACTIVITIES = (
    *SPEC_ACTIVITIES,
    VAULT_CLIENT,
    VAULT_CLEANUP,
    CLEAR_MAINTENANCE_MODE,
    SEND_ROLLOUT_SUMMARY,
    REBOOT_HOST,
    WAIT_FOR_HOST_BOOT,
    INSPECT_HOST,
    SEND_WAVE_NOTIFICATION,
    PLAN_HOST_NOTICES,
    *TRUST_ACTIVITIES,
    *GATE_ACTIVITIES,
)

# Step names as they appear in `progress`, alerts and the command log order.
STEP_PRECONDITIONS = "preconditions"
STEP_START_NOTICE = "start-notification"
STEP_PRE_DOWNTIME = "pre-downtime-scripts"
STEP_MAINTENANCE_ON = "maintenance-on"
STEP_STOP_SERVICES = "stop-services"
STEP_DRAIN = "drain"
STEP_PRE_UPDATE = "pre-update-scripts"
STEP_UPDATE = "update"
STEP_REBOOT = "reboot"
STEP_WAIT_FOR_BOOT = "wait-for-boot"
STEP_START_SERVICES = "start-services"
STEP_POST_UPDATE = "post-update-scripts"
STEP_HEALTH = "health-check"
STEP_MAINTENANCE_OFF = "maintenance-off"
STEP_SUCCESS_NOTICE = "success-notification"
STEP_DONE = "done"
