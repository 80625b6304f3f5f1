"""Readers for the two HTML chat exports: Telegram Desktop's default export and VK's "Archive of your data".

Both are machine-written pages with a fixed layout, one chat split over several files (messages.html,
messages2.html, ... for Telegram; messages0.html, messages50.html, ... for VK). The stage hands a chat's files as
one stream, in reading order (chat_formats.chat_parts decides it); each file ends with </html>, so the parsers read
one page at a time and memory stays at one page (Telegram writes 1,000 messages a page, VK 50).

Each page is cut at the start of every message block, and each block is read with a few anchored patterns. This is
what public parsers of these exports do too; the standard library's html.parser builds a tag event per element
and measured 200-340 µs per Telegram message here (dev_log.issue15.txt), against a budget of 60 µs per message for
the whole stage, so it is used for nothing in the hot path.
"""

from __future__ import annotations

import calendar
import codecs
import html
import re
from typing import Iterator

from ftg.chat_message import OWNER_ID, FormatError, Message, utf8_or_cp1251

READ_CHUNK = 1024 * 1024
"""Bytes read at a time (1 MB)."""
PAGE_END = b"</html>"

_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _raw_pages(stream) -> Iterator[bytes]:
    """The pages (one per file, each up to and with its </html>) of a stream of HTML files laid end to end, as bytes.

    Cut in bytes, before decoding: both exports write an ASCII-compatible encoding (UTF-8, Windows-1251), so
    b"</html>" is the same bytes in either, and a page decoded whole never splits a character."""
    buffer, start = b"", 0  # the next page begins at buffer[start]
    while True:
        chunk = stream.read(READ_CHUNK)
        buffer, start = buffer[start:] + chunk, 0
        end = buffer.find(PAGE_END, start)
        while end >= 0:  # an index, not a shorter copy of the buffer per page: VK writes ~60 pages per chunk
            yield buffer[start: end + len(PAGE_END)]
            start = end + len(PAGE_END)
            end = buffer.find(PAGE_END, start)
        if not chunk:
            break
    if buffer[start:].strip():
        yield buffer[start:]


def _pages(stream, notes: list[str]) -> Iterator[str]:
    """The decoded pages of a stream of HTML files laid end to end.

    The encoding is the one the first page declares, else UTF-8 when its head decodes as UTF-8, else Windows-1251.
    """
    encoding = ""
    for number, page in enumerate(_raw_pages(stream)):
        if number == 0:
            if page.startswith(codecs.BOM_UTF8):
                encoding = "utf-8"
            if b"\x00" in page[:1024]:
                raise FormatError("not a text file (binary data where HTML was expected)")
            declared = re.search(rb"charset=[\"']?([\w-]+)", page[:4096], re.IGNORECASE)
            if declared and not encoding:
                try:
                    encoding = codecs.lookup(declared[1].decode("ascii")).name
                except LookupError:
                    encoding = ""
            if not encoding:
                encoding = utf8_or_cp1251(page[:READ_CHUNK], notes,
                                          "not UTF-8 and no charset given; read as Windows-1251 (Cyrillic)")
        if not page.endswith(PAGE_END):
            notes.append("the last page ends without </html>: the file may be cut off (its messages were read)")
        yield page.decode(encoding, errors="replace").removeprefix("\ufeff")


def _group_chat(stream, names: re.Pattern) -> bool:
    """Whether more than two people write in the chat: the names that `names` finds in the raw pages (bytes: their
    encoding does not matter for telling them apart). Stops at the third name."""
    start = stream.tell()
    seen: set[bytes] = set()
    try:
        for page in _raw_pages(stream):
            for found in names.findall(page):
                seen.add(TG_VIA_BOT_BYTES.sub(b"", b"".join(found) if isinstance(found, tuple) else found).strip())
                if len(seen) > 2:
                    return True
        return False
    finally:
        stream.seek(start)


def _html_text(fragment: str) -> str:
    """Plain text of an HTML fragment: the page's own line breaks go, <br> becomes a newline, tags go, entities
    are decoded."""
    fragment = fragment.replace("\r", "").replace("\n", "")
    if "<" not in fragment and "&" not in fragment:
        return fragment.strip()  # most names and short messages: no tag, no entity (a third of the stage's time)
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", fragment))).strip()


# ---------------------------------------------------------------------------------------------------------------
# Telegram Desktop HTML (the default of "Export chat history"; "Machine-readable JSON" is read by parse_telegram)

TG_BLOCK = re.compile(r'<div class="message ([^"]*)" id="message(-?\d+)"[^>]*>')
TG_HEADER = re.compile(r'<div class="page_header">.*?<div class="text bold">(.*?)</div>', re.S)
TG_DATE = re.compile(r'<div class="pull_right date details" title="(\d\d)\.(\d\d)\.(\d{4}) (\d\d):(\d\d):(\d\d)'
                     r'(?: UTC([+-])(\d\d):(\d\d))?')
TG_FROM = re.compile(r'<div class="from_name">(.*?)</div>', re.S)
TG_TEXT = re.compile(r'<div class="text">(.*?)</div>', re.S)
TG_SERVICE = re.compile(r'<div class="body details">(.*?)</div>', re.S)
TG_MEDIA = re.compile(r'class="(?:media_wrap|media |photo_wrap|video_file_wrap|sticker_wrap|animated_wrap)')
TG_VIA_BOT = re.compile(r"\s+via @\w+$")
TG_VIA_BOT_BYTES = re.compile(rb"\s+via @\w+$")
TG_SENDER = re.compile(rb'title="[^"]*">\s*[\d:]+\s*</div>\s*<div class="from_name">\s*([^<]*?)\s*<')
"""A sender's name right after the message's time (forwarded originals sit after "forwarded body" instead)."""


_DAY_START: dict[tuple[str, str, str], int | None] = {}
"""Seconds at 00:00 UTC of each "dd.mm.yyyy" seen (None when not a date): thousands of messages share a day."""


def _telegram_time(match) -> float | None:
    day = match.group(1, 2, 3)
    start = _DAY_START.get(day, -1)
    if start == -1:
        if len(_DAY_START) >= 4096:  # a bound, so memory stays flat (a real chat spans a few thousand days)
            _DAY_START.clear()
        day_of_month, month, year = map(int, day)
        valid = 1 <= month <= 12 and 1 <= day_of_month <= 31
        start = _DAY_START[day] = calendar.timegm((year, month, day_of_month, 0, 0, 0, 0, 0, 0)) if valid else None
    hour, minute, second = map(int, match.group(4, 5, 6))
    if start is None or not (hour < 24 and minute < 60 and second < 62):
        return None
    moment = start + hour * 3600 + minute * 60 + second
    if match[7]:
        offset = int(match[8]) * 3600 + int(match[9]) * 60
        moment -= offset if match[7] == "+" else -offset
    return float(moment)


def parse_telegram_html(stream, notes: list[str]) -> Iterator[Message]:
    """Telegram Desktop's HTML export of one chat: messages.html, messages2.html, ... laid end to end.

    A "joined" block (the same sender again) has no name: it takes the previous sender's, across files too. Date
    separators (negative ids) are layout, not messages. Reads the stream twice: first to learn whether more than
    two people write (a group: other speakers' names then prefix their lines).
    """
    group = _group_chat(stream, TG_SENDER)
    chat, speaker = "", ""
    for page in _pages(stream, notes):
        header = TG_HEADER.search(page)
        if header and not chat:
            chat = _html_text(header[1]) or "chat"
        # Each block is read in place, between its own start and the next block's (search's pos and endpos), never
        # copied out: a 1,000-message page would otherwise be copied once more, message by message.
        blocks = list(TG_BLOCK.finditer(page))
        for number, block in enumerate(blocks):
            start, end = block.end(), blocks[number + 1].start() if number + 1 < len(blocks) else len(page)
            classes, message_id = block[1].split(), block[2]
            if "service" in classes:
                if message_id.startswith("-"):
                    continue  # a date separator
                service = TG_SERVICE.search(page, start, end)
                yield Message(chat or "chat", "", _html_text(service[1]) if service else "", time=None,
                              skip="service", group=group)
                continue
            forwarded_at = page.find('class="forwarded body"', start, end)
            sender = TG_FROM.search(page, start, end if forwarded_at < 0 else forwarded_at)
            skip = ""
            if sender:
                speaker = _html_text(sender[1])
                if TG_VIA_BOT.search(speaker):
                    speaker, skip = TG_VIA_BOT.sub("", speaker), "bot"
            elif "joined" not in classes:
                skip = "malformed"  # a first block without a sender
            date = TG_DATE.search(page, start, end)
            text = TG_TEXT.search(page, start, end)
            text = _html_text(text[1]) if text else ""
            if not skip and not text:
                skip = "media_only" if TG_MEDIA.search(page, start, end) else "empty"
            yield Message(chat or "chat", "", text, speaker=speaker, time=_telegram_time(date) if date else None,
                          skip=skip, group=group, forwarded=forwarded_at >= 0)


# ---------------------------------------------------------------------------------------------------------------
# VK "Archive of your data": messages/<peer id>/messages0.html (the newest 50), messages50.html, ...

VK_BLOCK = re.compile(r'<div class="message"[^>]*>')
VK_HEADER = re.compile(r'<div class="message__header">(.*?)</div>', re.S)
VK_AUTHOR = re.compile(r'<a href="(?:https?://vk\.com/)?([^"]*)"[^>]*>(.*?)</a>', re.S)
VK_KLUDGES = '<div class="kludges">'
VK_ATTACHMENT = re.compile(r'<div class="attachment__description">(.*?)</div>', re.S)
VK_DATE = re.compile(r"(\d{1,2}) (\w{3})\w* (\d{4}) (?:в|at) (\d{1,2}):(\d\d)(?::(\d\d))?")
VK_MONTHS = {name: number for number, names in enumerate(
    [("янв", "jan"), ("фев", "feb"), ("мар", "mar"), ("апр", "apr"), ("мая", "may", "май"), ("июн", "jun"),
     ("июл", "jul"), ("авг", "aug"), ("сен", "sep"), ("окт", "oct"), ("ноя", "nov"), ("дек", "dec")], start=1)
    for name in names}
VK_AFTER = re.compile('<div class="item"|<div class="pagination"|</body>')
VK_NAMES = re.compile(rb'<div class="message__header">\s*(?:<a [^>]*>([^<]*)</a>|([^,<]*),)')


def _vk_time(header: str) -> float | None:
    match = VK_DATE.search(header)
    if not match:
        return None
    month = VK_MONTHS.get(match[2].lower())
    day, year, hour, minute = map(int, match.group(1, 3, 4, 5))
    second = int(match[6] or 0)
    if not month or not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    # The archive gives local times without a zone; only the gaps between messages matter here.
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _vk_message(body: str, group: bool) -> Message:
    header = VK_HEADER.search(body)
    if not header:
        return Message("chat", "", "", skip="malformed", group=group)
    author = VK_AUTHOR.search(header[1])
    if author:
        speaker, speaker_id = _html_text(author[2]), author[1].strip("/")
    else:
        # Your own messages carry no link: "Вы, 12 янв 2020 в 14:02" ("You, ..." in English).
        speaker, speaker_id = _html_text(header[1]).split(",", 1)[0], OWNER_ID
    content = body[header.end():]
    # The message ends where the next item or the page's pagination begins.
    end = VK_AFTER.search(content)
    content = content[: end.start()] if end else content
    kludges = content.find(VK_KLUDGES)
    text_end = content.find("</div>")
    text_end = len(content) if text_end < 0 else text_end
    text = _html_text(content[: kludges if 0 <= kludges < text_end else text_end])
    skip = ""
    if not text:
        extra = content[kludges:] if kludges >= 0 else ""
        if VK_ATTACHMENT.search(extra):
            skip = "media_only"
        elif _html_text(extra):
            skip = "service"  # "Иван пригласил Олю", "Вы закрепили сообщение": the action, not words
        else:
            skip = "empty"
    number = speaker_id.removeprefix("id")  # vk.com/id123456789: the bare number is the same account
    return Message("chat", "", text, speaker=speaker, speaker_id=speaker_id,
                   aliases=(number,) if number.isdigit() and number != speaker_id else (),
                   time=_vk_time(header[1]), skip=skip, group=group)


def parse_vk(stream, notes: list[str]) -> Iterator[Message]:
    """VK's message archive of one chat: its pages laid end to end, oldest page first (chat_parts orders them);
    each page lists its messages newest first, so each page is turned round.

    Your own messages are marked (no link to a profile) and get speaker_id OWNER_ID. Reads the stream twice, the
    first time to learn whether more than two people write.
    """
    group = _group_chat(stream, VK_NAMES)
    for page in _pages(stream, notes):
        blocks = list(VK_BLOCK.finditer(page))
        messages = [_vk_message(page[block.end(): blocks[n + 1].start() if n + 1 < len(blocks) else len(page)], group)
                    for n, block in enumerate(blocks)]
        yield from reversed(messages)
