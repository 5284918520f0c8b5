"""The host side of wodsync: a package of standard-library-only modules shipped to a host.

Nothing here may import anything outside the standard library or the `wodsync.agent` and
`wodsync.engine.kinds` packages: the controller sends these sources to the host's own python3
(any 3.9 or newer) on every call and imports them there from memory. Requests carry
`PROTOCOL`; an agent answering a request of another version refuses it by name.
"""

PROTOCOL = 4
