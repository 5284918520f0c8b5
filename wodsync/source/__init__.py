"""The GitOps source: follow a repository, export immutable revisions, check them.

`git` (GitPython) mirrors one branch and exports commits as read-only folders; `revision`
validates an exported folder into located, serializable errors; `webhook` verifies and parses
GitHub push events; `watch` re-validates an author's working tree on every save; `unit` renders
the daemon's systemd unit. Importing this package imports none of them (GitPython and watchdog
load only when used).
"""
