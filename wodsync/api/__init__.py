"""The HTTP API, one package: the application (`app`), its dependencies (`deps`), the answers
to domain errors (`errors`), the routes (`routes/`) and what crosses the wire (`models`)."""
