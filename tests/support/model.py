"""What tests on the real local model share, so that the machine's speed never decides their
outcome: on a busy machine (a full suite beside other work) a turn of the 270M model can take
many times as long as it does idle."""

from __future__ import annotations

from typing import Any

NO_DEADLINES: dict[str, Any] = {"first_token_s": 0, "idle_s": 0, "total_s": 0}
"""``Settings(deadlines=NO_DEADLINES)``: the config's turn deadlines off (0 disables them), so a
slow prefill or a slow tool decision is never a timeout. Tests of the deadlines themselves run
on the scripted provider, whose timing they control."""

HUNG_S = 900.0
"""A guard that only stops a test that hangs: far beyond what any of these turns takes, even on
a machine busy with other work."""
