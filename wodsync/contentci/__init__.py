"""Content CI (`wodsync test`): a workshop's notebooks and checks run on a real, ephemeral seat
before a pull request merges; `ci` the flow, `seatrun` the notebooks as the seat's user
(`runner` is what that user runs), `report` the text, JSON and Markdown of the outcome."""
