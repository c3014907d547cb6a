"""tokenWhisper's policy: the Token Impact Matrix, policy sets and the inline tier (tier 1).

A shared library, so splinfer (on every token), the whisper service and the CLI
(``runa policy``) use one implementation. See docs/policy.md.
"""

from runa.policy.stream import HOLD, RELEASE_ONE, GateStep, StreamGate

__all__ = ["HOLD", "RELEASE_ONE", "GateStep", "StreamGate"]
