"""whisper: tokenWhisper's semantic tier (tier 2) as a service on the bus.

It judges texts (a prompt before the first token, an answer in windows) with the shipped
embedding model, the packaged numpy classifier and the matrix's exemplars, and answers
splinfer with ``runa.policy.tier2.Judgement`` dicts. Its daemon is named to the registry by
its ``"module:factory"`` path; the package exports nothing. docs/whisper.md.
"""

__all__: list[str] = []
