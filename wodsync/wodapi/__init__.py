"""WoD's api-db for an existing wod-frontend: the routes it calls, served from wodsync's catalog
and store behind the participant's journey (`routes`: HTTP; `customers`: registrations and
unregistering over `wodsync.portal`; `shapes`: WoD's field names). README: "An existing WoD
portal"."""
