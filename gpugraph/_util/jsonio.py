"""JSON for results (curves, similarity matrices): text out, and text or a file back in."""

from __future__ import annotations

import json


def dump(data: dict, path=None) -> str:
    """``data`` as indented JSON text; also written to ``path`` when given."""
    text = json.dumps(data, indent=2)
    if path is not None:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text


def load(text_or_path) -> dict:
    """A dict from JSON text, or from the file at that path."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        with open(text) as f:
            text = f.read()
    return json.loads(text)
