"""Finding the chat exports under the input folder: plain files and zip members (read in place, never unpacked),
the files of a chat split over several made one source, and each source's format."""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ftg.chat_formats import HEAD_BYTES, PARSERS, FormatError, PartsStream, chat_parts, detect

CANDIDATE_SUFFIXES = (".json", ".jsonl", ".txt")
NOT_CHATS = {"user.json", "users.json", "message_feedback.json", "shared_conversations.json", "model_comparisons.json",
             "projects.json", "memories.json", "channels.json", "groups.json", "dms.json", "mpims.json",
             "integration_logs.json", "canvases.json"}
"""Files that come inside ChatGPT, Claude and Slack exports next to the chats and hold none."""
META_SECTIONS = re.compile(r"(?:^|/)(?:your_facebook_activity|your_instagram_activity|personal_information|"
                           r"logged_information|security_and_login_information|ads_information|"
                           r"apps_and_websites_off_of_facebook|your_activity_across_facebook|activity_messages)/")
"""Folders of Meta's "Download your information" archive; only message_N.json files in them hold chats."""


@dataclass
class Source:
    name: str
    """Shown to the user and used in conversation ids: the path under the input folder, "archive.zip/member"."""
    path: Path
    member: str = ""
    """The file inside the zip archive `path`; "" for a plain file."""
    size: int = 0
    parts: list[tuple[Path, str]] = field(default_factory=list)
    """The chat's further files (path, member), read after this one: messages2.html, ... (see chat_parts)."""


@contextlib.contextmanager
def open_source(source: Source):
    """A seekable binary stream of the file, read from inside its zip archive when it is in one."""
    if source.parts:
        with contextlib.ExitStack() as stack:
            archives: dict[Path, zipfile.ZipFile] = {}

            def opener(path: Path, member: str):
                if not member:
                    return lambda: path.open("rb")
                if path not in archives:
                    archives[path] = stack.enter_context(zipfile.ZipFile(path))
                return lambda: archives[path].open(member)

            files = [opener(source.path, source.member)] + [opener(path, member) for path, member in source.parts]
            with io.BufferedReader(PartsStream(files), buffer_size=1024 * 1024) as stream:
                yield stream
        return
    if not source.member:
        with source.path.open("rb") as stream:
            yield stream
        return
    with zipfile.ZipFile(source.path) as archive, archive.open(source.member) as stream:
        yield stream


def find_sources(root: Path, problems: list[dict], output_dir: Path) -> tuple[list[Source], int]:
    """Candidate files under root (zip members included) and the number of other files passed over.

    Files under output_dir are left out, so an output folder inside the input is not read back as input."""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.resolve().is_relative_to(output_dir.resolve()))
    base = root.parent if root.is_file() else root
    found: dict[str, Source] = {}
    for path in files:
        name = path.relative_to(base).as_posix()
        if path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as archive:
                    for info in archive.infolist():
                        if not info.is_dir():
                            found[f"{name}/{info.filename}"] = Source(f"{name}/{info.filename}", path, info.filename,
                                                                      info.file_size)
            except (zipfile.BadZipFile, OSError) as exc:
                problems.append({"file": name, "problem": f"not a readable zip archive ({exc})"})
        else:
            found[name] = Source(name, path, "", path.stat().st_size)
    # A chat split over several files (Telegram HTML, VK, Messenger, Slack days) becomes one source, named by its
    # folder; users.json is shared by a Slack export's channels.
    sources, grouped = [], set()
    for group in chat_parts(list(found)):
        first, rest = found[group[0]], [found[n] for n in group[1:]]
        folder = os.path.commonpath([n.rpartition("/")[0] or "." for n in group[1:] or group])
        name = f"{folder}/ ({len(group)} files)" if rest else first.name
        sources.append(Source(name, first.path, first.member, sum(s.size for s in [first, *rest]),
                              [(s.path, s.member) for s in rest]))
        grouped.update(group)
    ignored = 0
    for name, source in found.items():
        if name in grouped:
            continue
        if is_candidate(name):
            sources.append(source)
        else:
            ignored += 1
    return sources, ignored


def is_candidate(name: str) -> bool:
    """Whether a file may hold chats: .json/.jsonl/.txt, but not a README or an export's account details."""
    base = name.rsplit("/", 1)[-1].lower()
    if META_SECTIONS.search(name):
        return False  # a Meta archive's other data; its chats (message_N.json) are grouped by chat_parts
    return base.endswith(CANDIDATE_SUFFIXES) and base not in NOT_CHATS and not base.startswith("readme")


def detect_format(source: Source, forced: str) -> str:
    """The file's format; raises FormatError naming the problem when the file cannot be used."""
    if source.size == 0:
        raise FormatError("empty file")
    with open_source(source) as stream:
        head = stream.read(HEAD_BYTES)
    for bom in (b"\xef\xbb\xbf",):
        head = head.removeprefix(bom)
    if not head.strip():
        raise FormatError("empty file (only blanks)")
    fmt = forced or detect(source.member or source.name, head)
    if not fmt:
        raise FormatError(
            "unknown format: not a chat export this tool knows. If it is one, force it with --format "
            f"({', '.join(PARSERS)})"
        )
    return fmt
