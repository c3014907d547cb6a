"""threadwell: Runa's front end. Its first half is a local OpenAI-compatible API
(docs/threadwell.md): ``app`` speaks HTTP, ``bus`` carries each request to splinfer or tieto,
``daemon`` serves the app on the sockets it is handed (socket activation) or binds loopback.
"""

__all__: list[str] = []
