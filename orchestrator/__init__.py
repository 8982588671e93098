"""swarm: an agentless fleet orchestrator for home GPU swarms.

Warnings that libraries raise about their own internals are for their developers, not for
swarm's operator: each known one is filtered here, by message and by the library's modules,
before anything of swarm imports that library (tests/unit/test_quiet_libraries.py runs the
CLI under `-W error`, so a new one fails there and is filtered, or its library pinned).
"""

import warnings

# cryptography deprecates DSA and warns on each DSA name asyncssh's modules read at import: ten
# lines on every command that opens SSH. swarm never offers or accepts DSA keys.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")

__version__ = "0.1.0"
