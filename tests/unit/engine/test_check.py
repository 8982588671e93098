"""`deploy --check --diff`: env files show their names, never a value — not even a line of one."""

from __future__ import annotations

from orchestrator.engine.check import mask_env


def test_mask_env_keeps_names_hides_values() -> None:
    masked = mask_env("# comment\nA='secret-one'\nB=two\n")
    assert masked == "# comment\nA=********\nB=********\n"


def test_a_value_over_several_lines_shows_none_of_them() -> None:
    """An env file an older swarm (or a hand) wrote, with a quoted value running over lines: its
    continuation lines are value too, even when one looks like an assignment or a comment."""
    text = ('A="first-line-x1\nsecond-line-x2\nFAKE=third-line-x3\n# fourth-x4"\n'
            "B='one\nKEY=two-x5'\n"
            'C="escaped \\" quote\nstill-value-x6"\n'
            "D=plain\n")
    masked = mask_env(text)
    assert masked == "A=********\nB=********\nC=********\nD=********\n"
    for part in ("x1", "x2", "x3", "x4", "x5", "x6", "FAKE", "KEY"):
        assert part not in masked
