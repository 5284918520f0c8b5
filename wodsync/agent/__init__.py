"""The host side of wodsync: a package of standard-library-only modules shipped to a host.

Nothing here may import anything outside the standard library and `wodsync.agent` itself: the
controller sends this package's sources — and nothing else — to the host's own python3 (any
3.9 or newer) on every call and imports them there from memory. The wire is typed in
`protocol`; the host halves of the resource kinds are `kinds`. Requests carry `PROTOCOL`; an
agent answering a request of another version refuses it by name.
"""

PROTOCOL = 4
