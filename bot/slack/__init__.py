"""The Slack front door: `/patch`, Approve/Reject buttons, the rollout thread, the status card."""
