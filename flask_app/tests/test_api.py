"""The JSON API end to end, against the real server: every route and every validation error."""

from __future__ import annotations

import pytest
import requests

from notes.validation import MAX_BODY, MAX_TEXT


def post(client, payload=None, **kwargs):
    return client.post("/api/notes", json=payload, **kwargs)


def test_create_get_list_delete(client):
    created = post(client, {"text": "  buy milk \n"})
    assert created.status_code == 201
    note = created.get_json()
    assert note["text"] == "buy milk"
    assert note["created_at"].endswith("Z")
    assert created.headers["Location"] == f"/api/notes/{note['id']}"

    fetched = client.get(f"/api/notes/{note['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == note

    listed = client.get("/api/notes").get_json()["notes"]
    assert listed[0] == note, "the latest note comes first"

    deleted = client.delete(f"/api/notes/{note['id']}")
    assert deleted.status_code == 204
    assert deleted.data == b""
    assert client.get(f"/api/notes/{note['id']}").status_code == 404


def test_list_is_newest_first(client):
    ids = [post(client, {"text": f"note {i}"}).get_json()["id"] for i in range(3)]
    listed = [n["id"] for n in client.get("/api/notes").get_json()["notes"]]
    assert listed[:3] == ids[::-1]


def test_text_is_stored_verbatim(client):
    # Unicode beyond the BMP needs utf8mb4 end to end; the quote and comment would break a
    # query built by string formatting.
    text = "emoji 🎉, accents é, and SQL '); DROP TABLE notes; -- <b>"
    note = post(client, {"text": text}).get_json()
    assert client.get(f"/api/notes/{note['id']}").get_json()["text"] == text


# Beyond the BMP each character is 4 bytes in the column and a 12-byte surrogate pair escape
# in the JSON body: the largest note there is, for both limits.
@pytest.mark.parametrize("char", ["é", "🎉"])
def test_text_at_the_limit_is_accepted(client, char):
    response = post(client, {"text": char * MAX_TEXT})
    assert response.status_code == 201
    assert response.get_json()["text"] == char * MAX_TEXT


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, '"text" is missing'),
        ({"text": None}, '"text" must be a string, not null'),
        ({"text": 5}, '"text" must be a string, not a number'),
        ({"text": ["a"]}, '"text" must be a string, not an array'),
        ({"text": ""}, '"text" is empty'),
        ({"text": " \n\t "}, '"text" is empty'),
        (
            {"text": "x" * (MAX_TEXT + 1)},
            f'"text" is {MAX_TEXT + 1} characters long; the limit is {MAX_TEXT} characters',
        ),
        ({"text": "ok", "tags": []}, "unknown field 'tags': a note has only \"text\""),
        (["text"], 'the body must be a JSON object {"text": ...}, not an array'),
        ("text", 'the body must be a JSON object {"text": ...}, not a string'),
    ],
)
def test_bad_note_is_400_with_the_reason(client, payload, message):
    response = post(client, payload)
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"null", 'the body must be a JSON object {"text": ...}, not null'),
        # Valid JSON, but no UTF-8 encodes half of a surrogate pair, so no server stores it.
        (
            b'{"text": "half \\ud83c of an emoji"}',
            '"text" is not valid Unicode: a lone surrogate \\ud83c at character 6',
        ),
        # Valid JSON nested deeper than Python's parser recurses.
        (b"[" * 5000 + b"]" * 5000, 'the body is nested too deeply for a note {"text": ...}'),
    ],
)
def test_odd_json_is_400_with_the_reason(client, body, message, log_lines):
    response = client.post("/api/notes", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"error": message}
    assert not log_lines.messages("Unhandled error")


def test_body_that_is_not_json_is_415(client):
    response = client.post("/api/notes", data="text=hello", content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json() == {
        "error": "the body must be JSON, sent as Content-Type: application/json"
    }
    form = client.post("/api/notes", data={"text": "hello"})
    assert form.status_code == 415


def test_malformed_json_is_415(client):
    response = client.post("/api/notes", data='{"text": ', content_type="application/json")
    assert response.status_code == 415
    assert response.get_json() == {"error": "the body is not valid JSON"}


def test_body_over_the_limit_is_413(client):
    response = post(client, {"text": "x" * MAX_BODY})
    assert response.status_code == 413
    assert response.get_json() == {
        "error": f"the body is larger than the limit of {MAX_BODY} bytes"
    }


def test_unknown_note_is_404(client):
    for method in (client.get, client.delete):
        response = method("/api/notes/987654321")
        assert response.status_code == 404
        assert response.get_json() == {"error": "note 987654321 not found"}


def test_unknown_path_is_404(client):
    for path in ("/api/notes/abc", "/api/nothing", "/nothing"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json() == {"error": "no such resource"}


def test_wrong_method_is_405_with_allow(client):
    response = client.put("/api/notes", json={"text": "x"})
    assert response.status_code == 405
    assert response.get_json() == {"error": "method not allowed"}
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    assert client.post("/api/notes/1").status_code == 405
    assert client.delete("/api/notes").status_code == 405


def test_request_id_is_echoed_and_logged(client, log_lines):
    response = client.get("/api/notes", headers={"X-Request-Id": "gw-1234.abc"})
    assert response.headers["X-Request-Id"] == "gw-1234.abc"
    (line,) = log_lines.messages("Request")
    assert line["request_id"] == "gw-1234.abc"
    assert line["method"] == "GET"
    assert line["path"] == "/api/notes"
    assert line["status"] == 200
    assert line["level"] == "INFO"
    assert line["logger"] == "notes.access"
    assert isinstance(line["duration_ms"], float)


def test_request_id_is_made_when_missing_or_unsafe(client, log_lines):
    plain = client.get("/healthz")
    unsafe = client.get("/healthz", headers={"X-Request-Id": "a b\x7f" + "x" * 200})
    ids = [r.headers["X-Request-Id"] for r in (plain, unsafe)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0] != ids[1]
    assert [r["request_id"] for r in log_lines.messages("Request")] == ids


def test_one_proxy_is_trusted_for_the_client_address(client, log_lines):
    # The gateway appends the address it saw; what the client put before it is not trusted.
    client.get("/healthz", headers={"X-Forwarded-For": "192.0.2.66, 203.0.113.10"})
    (line,) = log_lines.messages("Request")
    assert line["remote_addr"] == "203.0.113.10"


def test_chunked_body_over_the_limit_is_413(gunicorn):
    # Without Content-Length (Transfer-Encoding: chunked, which the gateway may pass through)
    # the size is known only while reading. The body is valid JSON up to the limit and not
    # beyond it: cut at the limit it would be taken as a note.
    base, _ = gunicorn
    headers = {"Content-Type": "application/json", "X-Request-Id": "edge-413"}

    def post_chunked(body: bytes) -> requests.Response:
        chunks = (body[i : i + 1024] for i in range(0, len(body), 1024))
        return requests.post(f"{base}/api/notes", data=chunks, headers=headers, timeout=10)

    over = post_chunked(b'{"text": "cut here"}' + b" " * MAX_BODY + b"and more")
    assert over.status_code == 413
    assert over.json() == {"error": f"the body is larger than the limit of {MAX_BODY} bytes"}
    assert over.headers["X-Request-Id"] == "edge-413", "a refused request keeps its id"
    listed = requests.get(f"{base}/api/notes", timeout=10).json()["notes"]
    assert "cut here" not in [n["text"] for n in listed]

    at_the_limit = b'{"text": "chunked"' + b" " * (MAX_BODY - 19) + b"}"
    assert len(at_the_limit) == MAX_BODY
    taken = post_chunked(at_the_limit)
    assert taken.status_code == 201
    assert taken.json()["text"] == "chunked"
