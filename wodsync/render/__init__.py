"""Rendering: the catalog's templates turned into files, in a bounded Jinja sandbox.

`jinja` holds the environment and the contexts (workshop, seat, hub, system), `sandbox` the
time and size budget templates render under, `content` a seat's whole workshop folder — the
same list `wodsync render` previews and a CREATE streams to the host.
"""
