"""The HTTP routes, one module per concern; `wodsync.api.app` mounts them.

Sessions and the portal's feed are served by `wodsync serve` and the daemon; the others
(webhook, manual reconcile, status, facts, readiness, metrics) by the daemon. A route takes
what it needs from `wodsync.api.deps` and raises domain errors; `wodsync.api.errors` answers
them.
"""
