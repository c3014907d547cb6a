"""``runa chat``: the terminal REPL on top of splinfer's conversations and personas.

``commands`` reads what was typed, ``params`` keeps and checks this session's sampling
settings, ``session`` speaks splinfer's protocol for one conversation, ``repl`` is the
loop (terminal or piped lines) and ``files`` the person's own chat files. Each takes its
collaborators as arguments, so the tests drive the REPL without any process.
"""
