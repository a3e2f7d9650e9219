"""The secrets scanner finds a token in every form it can take on the way, and nothing in a string that only looks alike."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from support.leak_scan import Secrets, forms

CORE = "0f3a9c1d2b4e5f60718293a4b5c6d7e8"
# Every character that some encoding changes: / + " \ space =
TOKEN = f'ms-token/{CORE}+"se\\cret" ='
# Only one character of the random core differs.
LOOKALIKE = TOKEN.replace(CORE, f"{CORE[:10]}X{CORE[11:]}")


# How a run could carry a token: each wrapper applied to the token must be found, applied to the lookalike must not.
WRAPPERS = {
    "as is": lambda t: f"token={t}",
    "url-encoded": lambda t: "https://hub/?t=" + quote(t, safe=""),
    "url-encoded, / kept": lambda t: "https://hub/?t=" + quote(t),
    "url-encoded, lower-case %xx": lambda t: "t=" + quote(t, safe="").lower(),
    "form-encoded": lambda t: "a=1&t=" + quote_plus(t, safe=""),
    "with + read as a space": lambda t: "token: " + t.replace("+", " "),
    "json-escaped, / as \\/": lambda t: '{"t": "%s"}' % json.dumps(t)[1:-1].replace("/", "\\/"),
    "json-escaped twice": lambda t: json.dumps({"stdout": json.dumps({"token": f'say "{t}"'})}),
    "hex": lambda t: "dump " + t.encode().hex(),
    "hex, upper-case": lambda t: "DUMP " + t.encode().hex().upper(),
    "base64 in a Basic header": lambda t: "Authorization: Basic " + base64.b64encode(f"user:{t}".encode()).decode(),
    "url-safe base64": lambda t: "blob=" + base64.urlsafe_b64encode(b"xy" + t.encode() + b"tail").decode(),
}


@pytest.mark.parametrize("form", WRAPPERS)
def test_each_form_of_the_token_is_found(form):
    text = WRAPPERS[form](TOKEN)
    assert (TOKEN in text) == (form == "as is"), text
    assert Secrets(token=TOKEN).in_texts({"out": text}), text


@pytest.mark.parametrize("form", WRAPPERS)
def test_a_lookalike_in_the_same_form_is_not(form):
    """The token with one character of its core changed, wrapped the same way: no hit, not even of the core."""
    assert Secrets(token=TOKEN, token_core=CORE).in_texts({"out": WRAPPERS[form](LOOKALIKE)}) == []


def test_the_core_alone_is_found_when_the_rest_of_the_token_is_gone():
    secrets = Secrets(token=TOKEN, token_core=CORE)
    found = secrets.in_texts({"log": f"Bearer {CORE[:16]}\n...{CORE}..."})
    assert found == ["log: token_core as is"]
    assert secrets.in_texts({"log": "id=" + base64.b64encode(CORE.encode()).decode()}) == ["log: token_core base64 at offset 0"]


def test_the_json_escaped_form_of_a_password_with_quotes():
    password = 'pa"ss\\word/1234567890'
    assert Secrets(password=password).in_texts({"result": json.dumps({"msg": password})}) == ["result: password json-escaped"]


def test_forms_that_come_out_the_same_are_looked_for_once():
    found = forms(CORE)
    assert len(set(found.values())) == len(found)
    assert list(found)[0] == "as is" and "url-encoded" not in found  # a hex core has nothing to escape


def test_a_secret_too_short_to_look_for_is_refused():
    with pytest.raises(ValueError, match="16 characters"):
        Secrets(token="short")
