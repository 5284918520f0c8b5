"""Badges anyone can verify: a workshop's badge when a session's completion reaches the
workshop's threshold, WoD's special badges at 3, 5, 7, 10 and 15 completed workshops, a public
page per awarded badge and a signed Open Badges 2.0 assertion.

The award itself is the store's (`wodsync.store.badges`, in the transaction that ends the
session); here are what the rest builds on it: who a badge belongs to (`identity`), the special
levels (`specials`), the catalog's rules (`rules`), the Open Badges documents and their
signature (`openbadges`, `keys`), the links the mails and the session page show (`links`), the
public page (`page`, `images`), a third party's check of an assertion (`verify`) and where all
of it is registered with the session service, the mail and the portal (`wiring`). Nothing here
is imported by the store but `identity` and `specials`, which import nothing of wodsync.
"""
