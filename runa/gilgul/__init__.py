"""gilgul, Runa's service manager: renders the units, watches the components, reincarnates them.

Under systemd it talks to the user manager over D-Bus (``runa daemon gilgul``); the policy
(``runa.gilgul.policy``) is a plain state machine shared with Runa's own supervisor.
See docs/gilgul.md.
"""
