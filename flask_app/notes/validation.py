"""The rules for a note's text, shared by the JSON API and the HTML form."""

from __future__ import annotations

from typing import Any

# Characters, as the schema's VARCHAR(1000) counts them (code points).
MAX_TEXT = 1000
# Largest request body accepted (Flask's MAX_CONTENT_LENGTH): a 1000-character note is at most
# 12 kB of JSON even with every character escaped (\uXXXX, or a surrogate pair \uXXXX\uXXXX
# for one beyond the BMP), so 16 KiB leaves room for that.
MAX_BODY = 16 * 1024


class InvalidNote(ValueError):
    """The input cannot become a note; the message says what is wrong, for the client."""


def clean_text(value: Any) -> str:
    """The text to store, or InvalidNote. Surrounding whitespace is dropped."""
    if value is None:
        raise InvalidNote('"text" is missing')
    if not isinstance(value, str):
        raise InvalidNote(f'"text" must be a string, not {_json_type(value)}')
    text = value.strip()
    if not text:
        raise InvalidNote('"text" is empty')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        # JSON's \ud83c escapes can spell half a surrogate pair, which no UTF-8 encodes.
        raise InvalidNote(
            f'"text" is not valid Unicode: a lone surrogate \\u{ord(text[e.start]):04x}'
            f" at character {e.start + 1}"
        ) from e
    if len(text) > MAX_TEXT:
        raise InvalidNote(
            f'"text" is {len(text)} characters long; the limit is {MAX_TEXT} characters'
        )
    return text


def note_from_json(body: Any) -> str:
    """The text of a JSON note body {"text": "..."}, or InvalidNote."""
    if not isinstance(body, dict):
        raise InvalidNote(f'the body must be a JSON object {{"text": ...}}, not {_json_type(body)}')
    unknown = sorted(set(body) - {"text"})
    if unknown:
        raise InvalidNote(f'unknown field {unknown[0]!r}: a note has only "text"')
    if "text" not in body:
        raise InvalidNote('"text" is missing')
    if body["text"] is None:
        raise InvalidNote('"text" must be a string, not null')
    return clean_text(body["text"])


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
