"""How the JSON exports are read: streamed, so memory stays flat however big the file is, and the few value readers
every JSON parser shares (formats_assistant.py, formats_telegram_discord.py).

A parse error becomes `FormatError` ("malformed JSON", or "cut off" when the file ends in the middle).
"""

from __future__ import annotations

import calendar
import json
from datetime import datetime
from typing import Iterator

import ijson

from ftg.chat_message import FormatError, skip_bom

READ_CHUNK = 1024 * 1024
"""Bytes fed to the JSON parser at a time (1 MB): memory per file is this plus the largest single record."""


class _Discard:
    def send(self, value):
        pass


def _parse_error(error: Exception) -> FormatError:
    detail = " ".join(str(error).split())
    if "premature EOF" in detail or "Incomplete" in detail:
        return FormatError("the JSON ends in the middle: the file is cut off (copy or download it again)")
    return FormatError(f"malformed JSON ({detail[:100]})")


def _items(stream, prefix: str):
    """ijson.items (built in C), with parse errors turned into FormatError."""
    try:
        yield from ijson.items(stream, prefix, use_float=True)
    except ijson.JSONError as exc:
        raise _parse_error(exc) from None


def streamed_items(stream, paths: tuple[tuple[str, ...], ...]):
    """Yield (owner, item) for every item of the JSON lists at `paths` in a top-level object, while the file is read.

    A path such as ("chats", "list", "*", "messages") names the "messages" list of each item of chats.list; the
    owner is the object holding that list (a Telegram chat, with its name and type). ijson builds the document in C;
    after each chunk, the finished items are handed out and removed from it, so memory stays flat in the file size.
    """
    if first_byte(stream) != b"{":
        raise FormatError("expected a JSON object ({...}) at the top")
    root: list[dict] = []

    def new_map() -> dict:
        made: dict = {}
        if not root:
            root.append(made)
        return made

    parser = ijson.items_coro(_Discard(), "", map_type=new_map, use_float=True)
    try:
        while chunk := stream.read(READ_CHUNK):
            parser.send(chunk)
            for path in paths:
                yield from _drain(root[0] if root else None, path, done=False)
        parser.close()
    except ijson.JSONError as exc:
        raise _parse_error(exc) from None
    for path in paths:
        yield from _drain(root[0] if root else None, path, done=True)


def _drain(node, path: tuple[str, ...], done: bool):
    """Hand out and remove the finished items under `node` along `path`; `done` says node itself is finished.

    Only the last item of a list can still be growing: every item before it is complete.
    """
    if path[0] == "*":
        if not isinstance(node, list):
            return
        finished = len(node) if done else max(len(node) - 1, 0)
        for owner in node[:finished]:
            yield from _drain(owner, path[1:], done=True)
        if not done and node:
            yield from _drain(node[-1], path[1:], done=False)
        del node[:finished]
        return
    if not isinstance(node, dict) or path[0] not in node:
        return
    child = node[path[0]]
    if len(path) > 1:
        yield from _drain(child, path[1:], done)
        return
    if not isinstance(child, list):
        return
    finished = len(child) if done else max(len(child) - 1, 0)
    for item in child[:finished]:
        yield node, item
    del child[:finished]


def records(stream, notes: list[str]) -> Iterator[object]:
    """The records of a JSON list, a single JSON object, or a JSON Lines file; None for a line that is not JSON."""
    first = first_byte(stream)
    if first == b"[":
        yield from _items(stream, "item")
        return
    bad_lines, first_line = 0, True
    for raw in stream:
        line = raw.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
            first_line = False
        except (ValueError, RecursionError):
            if first_line:
                # Not JSON Lines but one pretty-printed object.
                stream.seek(0)
                skip_bom(stream)
                yield from _items(stream, "")
                return
            bad_lines += 1
            yield None
    if bad_lines:
        notes.append(f"{bad_lines} lines are not valid JSON (counted as malformed)")


def first_byte(stream) -> bytes:
    """The first non-blank byte, leaving the stream where it was."""
    start = stream.tell()
    head = stream.read(4096).lstrip()
    stream.seek(start)
    return head[:1]


def as_text(value) -> str:
    return value if isinstance(value, str) else ""


def time_from_iso(value) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return float(calendar.timegm(moment.timetuple()))
    return moment.timestamp()


def as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
