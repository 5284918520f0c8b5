"""WoD's api-db for an existing wod-frontend: the routes it calls, served from wodsync's catalog
and store behind the participant's journey: `customers` (registrations and unregistering
over `wodsync.portal`), `shapes` (WoD's field names); the routes are HTTP, so they live with the
others (`wodsync/api/routes/wodapi.py`). README: "An existing WoD portal"."""
