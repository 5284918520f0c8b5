"""The seat guard, controller side: what a host is asked to check (`rules`), what becomes of
its findings (`actions`: events in the store, PURGE and quarantine through the session
service, counters, the operators told) and the daemon's loop (`loop`). The host side is
`wodsync.agent.guard`; the catalog's part, `wodsync.catalog.guard`."""
