"""The runtime names no app: the quote app's concepts (quotes, buyers, sellers, finance) appear
only in `ramparts/quotes/`. Every other file of the package — code, Cedar, SQL in migrations,
templates, snapshots — must work for any app, so a word of the quote app outside it is a place
where the runtime still assumes that app."""

from __future__ import annotations

import re
from pathlib import Path

import ramparts

PACKAGE = Path(ramparts.__file__).resolve().parent
APP_WORDS = re.compile(r"\b(quotes?|buyers?|sellers?|finance)\b", re.IGNORECASE)
#: Plain English, not the app: (file, the phrase the word stands in).
ENGLISH = {
    # The `json` module's own message, translated for the caller.
    ("web/bodies.py", "double quotes"),
    # A quote number is a reference like an order or an invoice number (a detector keyword).
    ("detectors.py", "|quote|"),
}


def _runtime_files() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file()
        and path.suffix not in {".pyc", ".png", ".ico", ".woff2"}
        and PACKAGE / "quotes" not in path.parents
    ]


def test_the_runtime_names_no_app_concept() -> None:
    found = []
    for path in _runtime_files():
        name = path.relative_to(PACKAGE).as_posix()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if APP_WORDS.search(line) and not any(
                name == where and phrase in line for where, phrase in ENGLISH
            ):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "the runtime names the quote app:\n" + "\n".join(found)


def test_the_check_sees_the_runtime_and_would_fail() -> None:
    files = {path.relative_to(PACKAGE).as_posix() for path in _runtime_files()}
    assert {"web/app.py", "policy/engine.py", "db/migrate.py"} <= files
    assert not any(name.startswith("quotes/") for name in files)
    assert APP_WORDS.search("a Buyer asks for Quotes")
