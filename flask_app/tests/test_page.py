"""The HTML page and its CSRF-protected form, end to end against the real server."""

from __future__ import annotations

import re
import time

import pytest

from notes.validation import MAX_TEXT

# The gateway serves the site over HTTPS and says so with X-Forwarded-Proto; the session
# cookie is Secure, so the test client must speak https too.
BASE = "https://app.example.com"
PAGE = f"{BASE}/"
# A request that needs the database answers within this long while it is unreachable.
REQUEST_LIMIT_S = 2.0


@pytest.fixture
def browser(app):
    return app.test_client()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def submit(browser, text: str, token: str | None, referer: str | None = PAGE):
    data = {"text": text}
    if token is not None:
        data["csrf_token"] = token
    headers = {"Referer": referer} if referer else {}
    return browser.post("/notes", base_url=BASE, data=data, headers=headers)


def test_page_lists_notes_and_says_the_database_is_reachable(browser, db):
    browser.post("/api/notes", json={"text": "<script>alert(1)</script> shown as text"})
    page = browser.get("/", base_url=BASE)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f"Database 127.0.0.1:{db.port}: reachable" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; shown as text" in html
    assert "<script>alert" not in html


def test_form_adds_a_note(browser):
    token = csrf_token(browser.get("/", base_url=BASE).get_data(as_text=True))
    response = submit(browser, "added through the form", token)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    page = browser.get("/", base_url=BASE).get_data(as_text=True)
    assert "added through the form" in page
    api = browser.get("/api/notes").get_json()["notes"]
    assert api[0]["text"] == "added through the form"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "&#34;text&#34; is empty"),
        ("y" * (MAX_TEXT + 1), f"the limit is {MAX_TEXT} characters"),
    ],
)
def test_form_with_bad_text_is_400_with_the_reason(browser, text, message):
    token = csrf_token(browser.get("/", base_url=BASE).get_data(as_text=True))
    response = submit(browser, text, token)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_form_without_csrf_token_is_refused(browser):
    before = browser.get("/api/notes").get_json()["notes"]
    browser.get("/", base_url=BASE)
    response = submit(browser, "forged", token=None)
    assert response.status_code == 400
    assert "form rejected: The CSRF token is missing." in response.get_data(as_text=True)
    assert browser.get("/api/notes").get_json()["notes"] == before


def test_form_with_a_token_from_another_session_is_refused(browser, app):
    other = app.test_client()
    token = csrf_token(other.get("/", base_url=BASE).get_data(as_text=True))
    browser.get("/", base_url=BASE)
    response = submit(browser, "forged", token)
    assert response.status_code == 400
    assert "form rejected: The CSRF tokens do not match." in response.get_data(as_text=True)


def test_form_posted_from_another_site_is_refused(browser):
    # Over HTTPS (X-Forwarded-Proto trusted from the one proxy) the Referer must be this site.
    token = csrf_token(browser.get("/", base_url=BASE).get_data(as_text=True))
    response = submit(browser, "forged", token, referer="https://evil.example.net/")
    assert response.status_code == 400
    assert "The referrer does not match the host." in response.get_data(as_text=True)


def test_forwarded_proto_makes_the_request_https(app):
    # Plain HTTP from the gateway to gunicorn, X-Forwarded-Proto: https from the gateway:
    # the app sees HTTPS, so the Referer check applies and external URLs are https://.
    browser = app.test_client()
    headers = {"X-Forwarded-Proto": "https", "Host": "app.example.com"}
    page = browser.get("/", headers=headers)
    assert '<link rel="canonical" href="https://app.example.com/">' in page.get_data(True)
    token = csrf_token(page.get_data(as_text=True))
    response = browser.post("/notes", data={"text": "x", "csrf_token": token}, headers=headers)
    assert response.status_code == 400
    assert "The referrer header is missing." in response.get_data(as_text=True)


def test_form_fails_within_the_limit_while_packets_are_dropped(browser, db):
    # The contract: a request that needs the database answers 503 within 2 s while it is
    # unreachable. The slowest case is a pooled connection whose ping waits out the read
    # timeout, then a reconnect that waits out the connect timeout (1.8 s); a form post that
    # then queried the database again to render the page would wait out a timeout once more.
    token = csrf_token(browser.get("/", base_url=BASE).get_data(as_text=True))
    with db.dropping_packets():
        start = time.monotonic()
        response = submit(browser, "while the link is down", token)
        seconds = time.monotonic() - start
    print(f"packets dropped: the form post answered after {seconds:.3f} s")
    assert response.status_code == 503
    html = response.get_data(as_text=True)
    assert "not saved: the database is unavailable" in html
    assert "unreachable (timeout)" in html
    assert seconds < REQUEST_LIMIT_S


def test_form_line_breaks_count_as_one_character(browser):
    # Browsers send a textarea's line breaks as CRLF, while its maxlength counts each as one
    # character: a note the form let through must not be refused for its line breaks, and is
    # stored with the LF the JSON API uses.
    text = "\r\n".join(["line"] * 200)  # 999 characters with LF line breaks
    token = csrf_token(browser.get("/", base_url=BASE).get_data(as_text=True))
    response = submit(browser, text, token)
    assert response.status_code == 303, response.get_data(as_text=True)[-600:]
    stored = browser.get("/api/notes").get_json()["notes"][0]["text"]
    assert stored == text.replace("\r\n", "\n")
    assert len(stored) == 999


def test_refused_form_keeps_the_request_id(browser, log_lines):
    # The CSRF check runs before the view; the request id must already be taken by then.
    browser.get("/", base_url=BASE)
    response = browser.post(
        "/notes", base_url=BASE, data={"text": "forged"}, headers={"X-Request-Id": "edge-csrf"}
    )
    assert response.status_code == 400
    assert response.headers["X-Request-Id"] == "edge-csrf"
    assert log_lines.messages("Request")[-1]["request_id"] == "edge-csrf"
