"""Tools for the people who write the catalog and review its changes, not for the hosts.

`importer` turns a WoD notebooks tree into a catalog, `scaffold` starts a new workshop,
`watch` re-plans a working tree on every save, `review` names a pull request's privileged
changes, `facts` is the published facts document the daemon serves and `preview` plans a pull
request against it.
"""
