"""Workshop sessions: a seat given to a participant for a workshop's duration.

`service.SessionService` runs the lifecycle — CREATE, CLEANUP, RESET, PURGE, EXTEND and the
expiry of sessions whose time is over — against the store (`wodsync.store`) and the hosts (one
round trip per operation, on each host's open connection). `seat` builds what a host needs for
one seat; `completion` measures how much of a workshop a participant ran.
"""
