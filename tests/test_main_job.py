"""The main job, end to end: a note written from office through the gateway shows on the page
office reads next, and is a row in MySQL on db."""

from __future__ import annotations

import re
import uuid


def test_note_posted_as_json_from_office_shows_on_the_page_and_in_mysql(lab):
    text = f"from office via the JSON API {uuid.uuid4().hex}"
    r = lab.curl(
        "office", "https://app.example.com/api/notes",
        "-X", "POST", "-H", "Content-Type: application/json", "--data", f'{{"text": "{text}"}}',
    )  # fmt: skip
    assert r.status == 201, r

    page = lab.curl("office", "https://app.example.com/")
    assert page.status == 200, page
    assert text in page.body

    assert lab.sql(f"SELECT COUNT(*) FROM notes.notes WHERE body = '{text}'") == [["1"]]


def test_note_posted_with_the_form_from_office_shows_on_the_page_and_in_mysql(lab, tmp_path):
    """The browser's way: fetch the form (a session cookie and a CSRF token), post it back."""
    jar = str(tmp_path / "cookies")
    form = lab.curl("office", "https://app.example.com/", "-c", jar)
    assert form.status == 200, form
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.body)
    assert token, "no CSRF token in the form"

    text = f"from office via the form {uuid.uuid4().hex}"
    r = lab.curl(
        "office", "https://app.example.com/notes",
        "-b", jar, "-c", jar, "-H", "Referer: https://app.example.com/",
        "--data-urlencode", f"text={text}", "--data-urlencode", f"csrf_token={token.group(1)}",
    )  # fmt: skip
    assert r.status == 303, r

    page = lab.curl("office", "https://app.example.com/", "-b", jar)
    assert text in page.body
    assert lab.sql(f"SELECT COUNT(*) FROM notes.notes WHERE body = '{text}'") == [["1"]]


def test_a_form_post_without_its_csrf_token_is_refused_and_stores_nothing(lab):
    text = f"forged {uuid.uuid4().hex}"
    r = lab.curl(
        "office", "https://app.example.com/notes", "--data-urlencode", f"text={text}",
        "-H", "Referer: https://app.example.com/",
    )  # fmt: skip
    assert r.status == 400, r
    assert lab.sql(f"SELECT COUNT(*) FROM notes.notes WHERE body = '{text}'") == [["0"]]
