"""Real English sentences for the ``corpus`` benchmark, from text already on this machine.

Sources, in this order of preference, each used only where present: the
Python documentation that ships with the interpreter (``pydoc_data.topics``:
the language reference and library topics ``help()`` shows), and the licence
texts Debian ships in ``/usr/share/common-licenses``.  Paragraphs are split
into sentences (at ``.``, ``?`` or ``!`` followed by a capital), whitespace is
normalised, code-like fragments and duplicates are dropped, and ``n`` sentences
are picked evenly spread over the whole pool so short and long ones are mixed
as in prose.  Same machine, same text: the same list every time.
"""

from __future__ import annotations

import re
from pathlib import Path

from webaccel.errors import InvalidInputError

LICENSES = Path("/usr/share/common-licenses")
# Plain-prose licences (the others repeat these or are mostly lists).
LICENSE_FILES = ("GPL-3", "Apache-2.0", "GFDL-1.3", "MPL-2.0", "LGPL-2.1", "Artistic", "CC0-1.0")

_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z\"'(])")
_WORD = re.compile(r"[A-Za-z]+")


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _is_prose(s: str) -> bool:
    words = s.split()
    if not 4 <= len(words) <= 90 or not s[0].isupper() or s[-1] not in ".?!":
        return False
    letters = sum(len(w) for w in _WORD.findall(s))
    if letters < 0.75 * sum(1 for c in s if not c.isspace()):
        return False  # code, tables, grammar rules
    return not any(tok in s for tok in (">>>", "::=", "__", "...", "http", "www.", "{", "}"))


def sources() -> dict[str, str]:
    """Name -> raw text of each source present here."""
    out: dict[str, str] = {}
    topics: dict[str, str] = {}
    try:
        from pydoc_data import topics as pydoc_topics
    except ImportError:  # a Python built without its docs
        pass
    else:
        topics = dict(pydoc_topics.topics)
    if topics:
        out["python-docs"] = "\n\n".join(topics[k] for k in sorted(topics))
    for name in LICENSE_FILES:
        path = LICENSES / name
        if path.is_file():
            out[f"common-licenses/{name}"] = path.read_text(errors="replace")
    return out


def sentences(n: int = 2000) -> tuple[list[str], dict[str, int]]:
    """``n`` distinct prose sentences and how many came from each source."""
    pool: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, text in sources().items():
        for para in _paragraphs(text):
            for s in _SPLIT.split(para):
                s = s.strip()
                if _is_prose(s) and s not in seen:
                    seen.add(s)
                    pool.append((name, s))
    if len(pool) < n:
        raise InvalidInputError(f"only {len(pool)} sentences found in {list(sources())}; need {n}")
    step = len(pool) / n
    picked = [pool[int(i * step)] for i in range(n)]
    counts: dict[str, int] = {}
    for name, _ in picked:
        counts[name] = counts.get(name, 0) + 1
    return [s for _, s in picked], counts
