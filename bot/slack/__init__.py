"""The Slack front door: `/patch`, Approve/Reject buttons, the rollout thread, the status card.

Module map (the bot process, then the worker side):
    app.py               build_app: the Bolt AsyncApp and its listener registrations
    listeners.py         what is answered in the ack, and what is handed to the background
    context.py           SlackBot: the shared dependencies and the work run after an ack
    start.py             `/patch <cluster> …`: post the card, start the rollout, ask the approvers
    decisions.py         the Approve / Reject buttons
    control.py           `/patch status`, `/patch list`, `/patch cancel`
    schedule_commands.py `/patch schedule …` (Temporal Schedules through bot/schedules.py)
    identity.py          users.info / users.list / users.lookupByEmail: e-mails and mentions
    commands.py          `/patch` text -> a command (pure: no Slack, no Temporal)
    config.py            per-channel and per-cluster defaults (PATCHPILOT_SLACK_DEFAULTS)
    http.py              HTTP mode: POST /slack/events with replay refusal, GET /healthz
    runner.py            run_bot (`patchpilot bot`): Socket Mode or HTTP, embedded worker, links
    client.py            the Web API client (retries, 429s) and Slack's error codes
    blocks.py            Block Kit: the status card, the approval request, the summary
    notifier.py          SlackNotifier: the worker posts into the thread and updates the card

Everything that talks to Temporal about rollouts goes through `bot.rollouts.Rollouts`.
"""
