"""Cleaning a message's text: Unicode (NFC), line endings and invisible marks; personal data (e-mail addresses,
phone and card numbers, links) replaced with typed placeholders such as [EMAIL]."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

INVISIBLE = re.compile("[\u200b\u200e\u200f\u2060\ufeff]")
"""Zero-width marks that exports (WhatsApp on iOS, Windows tools) put into text."""
URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# Digits inside words, links or decimal numbers ("3.14159265358979") are not cards or phones.
CARD = re.compile(r"(?<![\w/=.,])\d(?:[ -]?\d){12,18}(?![\w/]|[.,]\d)")
PHONE = re.compile(
    r"(?<![\w/=+.,])(?:\+\d{1,3}[\s-]?)?(?:\(\d{2,5}\)[\s-]?)?\d{2,5}(?:[\s-]?\d{2,4}){1,4}(?![\w/]|[.,]\d)"
)
TEN_DIGITS = re.compile(r"\d(?:[\s().+-]{0,3}\d){9}")
DATE_LIKE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match[0])
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn(digits) else match[0]


def _phone(match: re.Match) -> str:
    text = match[0]
    digits = sum(c.isdigit() for c in text)
    # A phone has 10-15 digits ("+7 912 345-67-89", "(555) 123-4567"); dates and plain numbers are left alone.
    if not 10 <= digits <= 15 or DATE_LIKE.match(text):
        return text
    return "[PHONE]"


def clean_text(text: str, scrub_pii: bool, scrub_urls: bool, pii: Counter) -> str:
    """Normalise Unicode (NFC), line endings and invisible marks; replace personal data with typed placeholders."""
    text = INVISIBLE.sub("", unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))).strip()
    if not scrub_pii or not text:
        return text
    if scrub_urls:
        text, n = URL.subn("[URL]", text)
        pii["url"] += n
    if "@" in text:
        text, n = EMAIL.subn("[EMAIL]", text)
        pii["email"] += n
    # Fast path: most messages hold no run of 10+ digits, so they can hold no card or phone number.
    if TEN_DIGITS.search(text):
        for name, pattern, replace in (("card", CARD, _card), ("phone", PHONE, _phone)):
            before = text.count(f"[{name.upper()}]")
            text = pattern.sub(replace, text)
            pii[name] += text.count(f"[{name.upper()}]") - before
    return text
