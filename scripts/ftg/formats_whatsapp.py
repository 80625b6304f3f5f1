"""Reader for WhatsApp's "Export chat" .txt, the one text export: a line per message start, Android and iOS,
US and RU/EU dates, 12/24-hour clocks; UTF-8, UTF-16 with BOM, or Windows-1251."""

from __future__ import annotations

import calendar
import io
import re
from typing import Iterator

from ftg.chat_message import Message, skip_bom, utf8_or_cp1251

# One line starts each WhatsApp message. Android: "12/31/23, 9:41 PM - Name: text", "31.12.23, 21:41 - Name: text";
# iOS: "[31.12.23, 21:41:05] Name: text". Newer exports put U+202F (narrow space) before AM/PM.
WHATSAPP_LINE = re.compile(
    r"^\[?(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4}),?\s(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)"
    r"(?:\s?(?P<ampm>[AaPp]\.?\s?[Mm]\.?))?(?:\]\s| - )(?P<rest>.*)$"
)
WHATSAPP_MEDIA = re.compile(
    r"^(?:<(?:Media omitted|Медиа отсутствуют|Медиафайл отсутствует|Медиафайл опущен|attached: [^>]*)>"
    r"|(?:image|video|audio|sticker|GIF|document|Contact card) omitted"
    r"|(?:изображение|видео|аудио|стикер|GIF|документ) отсутствует"
    r"|.*\(file attached\))$",
    re.IGNORECASE,
)
WHATSAPP_DELETED = re.compile(
    r"^(?:This message was deleted|You deleted this message|Данное сообщение удалено|Это сообщение удалено"
    r"|Вы удалили это сообщение)\.?$",
    re.IGNORECASE,
)
WHATSAPP_EDITED = re.compile(r"\s*<(?:This message was edited|Сообщение изменено|Изменено)>$", re.IGNORECASE)
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\ufeff"), None)


def _decoded_lines(stream, notes: list[str]) -> io.TextIOWrapper:
    """A text view of the stream: UTF-8 (with or without BOM), UTF-16 with BOM, or else Windows-1251."""
    encoding = skip_bom(stream)
    if not encoding:
        head = stream.read(1024 * 1024)
        stream.seek(0)
        encoding = utf8_or_cp1251(head, notes, "not UTF-8; read as Windows-1251 (Cyrillic)")
    return io.TextIOWrapper(stream, encoding=encoding, errors="replace", newline=None)


def whatsapp_header(line: str):
    # Only the marks in front of the date go; iOS marks system lines and media with U+200E in the text itself.
    line = line.lstrip("\u200e\u200f\ufeff").replace("\u202f", " ").replace("\u00a0", " ")
    return WHATSAPP_LINE.match(line)


def _whatsapp_time(match, day_first: bool) -> float | None:
    date = re.split(r"[./-]", match["date"])
    parts = [int(p) for p in date]
    if len(date[0]) == 4:
        year, month, day = parts
    elif day_first:
        day, month, year = parts
    else:
        month, day, year = parts
    year += 2000 if year < 100 else 0
    clock = [int(p) for p in re.split(r"[:.]", match["time"])]
    hour, minute, second = clock[0], clock[1], clock[2] if len(clock) > 2 else 0
    if match["ampm"]:
        hour = hour % 12 + (12 if match["ampm"][0] in "Pp" else 0)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 62):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_whatsapp(stream, notes: list[str]) -> Iterator[Message]:
    """WhatsApp's "Export chat" .txt (Android and iOS, US and RU/EU dates, 12/24-hour clocks).

    Reads the file twice: first to learn the date order (31.12 vs 12/31) and whether it is a group chat.
    """
    text = _decoded_lines(stream, notes)
    speakers, first_max, second_max, dots = set(), 0, 0, False
    for line in text:
        match = whatsapp_header(line)
        if match:
            first, second = (int(p) for p in re.split(r"[./-]", match["date"])[:2])
            first_max, second_max = max(first_max, first), max(second_max, second)
            dots = dots or "." in match["date"]
            name, sep, _ = match["rest"].partition(": ")
            if sep:
                speakers.add(name)
    # Day first when a first field exceeds 12, or with dotted dates (RU/EU); month first for US slashes.
    day_first = first_max > 12 or (second_max <= 12 and dots)
    group = len(speakers) > 2
    text.detach()
    stream.seek(0)
    text = _decoded_lines(stream, [])
    current: Message | None = None
    for line in text:
        line = line.rstrip("\n")
        match = whatsapp_header(line)
        if match is None:
            if current is None:
                current = Message("chat", "", "", skip="service", group=group)
            current.text += "\n" + line
            continue
        if current is not None:
            yield _finish_whatsapp(current)
        name, sep, body = match["rest"].partition(": ")
        time = _whatsapp_time(match, day_first)
        if sep:
            current = Message("chat", "", body, speaker=name.strip(), time=time, group=group)
        else:
            current = Message("chat", "", match["rest"], time=time, skip="service", group=group)
    if current is not None:
        yield _finish_whatsapp(current)


def _finish_whatsapp(message: Message) -> Message:
    marked = message.text.lstrip(" ").startswith("\u200e")
    message.text = WHATSAPP_EDITED.sub("", message.text.translate(_INVISIBLE).strip())
    if message.skip:
        return message
    if WHATSAPP_MEDIA.match(message.text):
        message.skip = "media_only"
    elif WHATSAPP_DELETED.match(message.text):
        message.skip = "deleted"
    elif marked:
        message.skip = "service"  # iOS puts the encryption notice and similar lines under the chat's name
    elif not message.text:
        message.skip = "empty"
    return message
