"""wodsync's e-mail: the participant's lifecycle mails, sent from the store's outbox.

Why a package: a mail is decided where a session moves (`triggers`, a move hook of the store,
written in the move's transaction), rendered from the catalog's templates when it is sent
(`render`, with the password and the secret links looked up then, never kept in the outbox),
and sent by a loop of the serving process with retries (`sender`). `sink` is a local SMTP
server that keeps what it receives in a Maildir, for the tests and the demo.

What other parts call: `wodsync.store.outbox.enqueue` (queue a mail in a transaction),
`links.register` (how a secret link is built), `context.register_extra` (what a kind's
template gets besides the defaults, e.g. the badges of an ended mail).
"""
