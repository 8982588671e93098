"""The scrubber masks a secret in every form it takes on its way out, short ones as whole tokens."""

from __future__ import annotations

import json
import shlex

import pytest

from orchestrator.events import Event
from orchestrator.secrets import MASK, REGISTRY, Secret, env_quote, scrub, scrub_data


@pytest.fixture(autouse=True)
def clean_registry() -> None:
    REGISTRY.clear()


@pytest.mark.parametrize("value", ['pa"ss', "back\\slash", "wörd-ünïcode", "tab\tand\nnewline", "it's $HOME"])
def test_every_outgoing_form_is_masked(value: str) -> None:
    Secret(value, "s")
    forms = [value, json.dumps({"m": value}), json.dumps({"m": value}, ensure_ascii=False),
             repr({"m": value}), shlex.quote(value), f"K={env_quote(value)}"]
    for text in forms:
        out = scrub(f"before {text} after")
        assert value not in out and MASK in out, text
        assert out.startswith("before ") and out.endswith(" after")


def test_json_stays_json_after_scrubbing() -> None:
    Secret('q"uo\\te', "s")
    out = scrub(json.dumps({"message": 'token q"uo\\te here'}))
    assert json.loads(out) == {"message": f"token {MASK} here"}


def test_event_json_is_masked() -> None:
    Secret("pässwörd\"x", "s")
    event = Event(kind="apply", state="failed", message="m", data={"stderr": 'auth pässwörd"x failed'})
    assert "pässwörd" not in event.to_json()


def test_short_values_are_masked_as_whole_tokens_only() -> None:
    Secret("abc", "s")
    assert scrub("password=abc") == f"password={MASK}"
    assert scrub('"abc"') == f'"{MASK}"'
    assert scrub("abcdef xabc") == "abcdef xabc"  # ordinary words are left alone


def test_scrub_data_walks_event_payloads() -> None:
    secret = Secret("s3cr3t-value", "s")
    data = {"env": ["A=s3cr3t-value"], "obj": secret, "n": 3, "nested": {"k": ("x s3cr3t-value",)}}
    assert scrub_data(data) == {"env": [f"A={MASK}"], "obj": MASK, "n": 3, "nested": {"k": (f"x {MASK}",)}}


def test_verbose_tracebacks_are_scrubbed_and_escaped() -> None:
    """`-v` prints an internal error's traceback through the log handler: the exception text
    and the frames' source lines pass the scrubber, and no control byte reaches the terminal."""
    import io
    import logging

    from orchestrator.cli.common import SafeLogFormatter
    from orchestrator.secrets import Secret

    token = Secret("tb-secret-7d1c9e", "vault-token")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeLogFormatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("swarm.test.traceback")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"connect with {token.reveal()} failed \x1b[2J")
        except RuntimeError:
            log.exception("internal error")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and "tb-secret-7d1c9e" not in text and "********" in text
    assert "\x1b" not in text and "\\x1b[2J" in text
