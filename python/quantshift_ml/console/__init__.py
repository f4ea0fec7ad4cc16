"""The model console: a web dashboard on the control node (the ``console`` extra).

Pages read what the project's playbooks report; Train Now and rollback run those
playbooks through ansible-runner. ``docs/console.md`` describes it.
May import: ops and below (the store, the drift report, alerts); only ``cli`` imports it.
"""
