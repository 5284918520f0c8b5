"""The registration portal: the pages a participant uses, from registering to the end of a
workshop.

`screening` decides whether an address may register (syntax, throw-away domains, the allow and
deny lists) and folds it into the key of the one-live-session rule; `links` makes and checks the
secrets of the mailed links (confirmation, session page); `journey` is what a form or a click
does (register, confirm, extend, unregister) in words a participant understands; `badges` is
the hook through which badges reach the session page. Nothing here speaks HTTP: the routes
(`wodsync.api.routes.register`, `wodsync.api.routes.session_page`) and the HTML
(`wodsync.api.pages`, `api/templates/`) are the API package's.
"""
