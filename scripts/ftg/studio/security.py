"""Studio's safety: the per-launch token, Host and Origin checks (Jupyter Server's model), safe uploads and zips.

Why each check:
- token: any local program or web page could otherwise call the server; the launcher opens the URL with it, and the
  first request turns it into an HttpOnly, SameSite=Strict cookie (so it leaves the address bar and the history).
- Host: a page on evil.example can make its own name resolve to 127.0.0.1 (DNS rebinding); its requests then carry
  Host: evil.example, so only local names pass unless --listen was given.
- Origin: a request that a browser sends from another site carries that site's Origin; it must be this server.
"""

from __future__ import annotations

import hmac
import secrets
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ftg.errors import UserError

TOKEN_COOKIE = "studio_token"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
MAX_UPLOAD_BYTES = 2 * 1024**3
"""One uploaded file: 2 GiB, more than the biggest Telegram result.json we have seen (about 1 GB)."""
MAX_UNZIPPED_BYTES = 8 * 1024**3
"""All the files of one zip together, unpacked: 8 GiB."""
MAX_ZIP_RATIO = 200
"""Unpacked size / packed size of one member: JSON exports pack about 5-20x; a zip bomb packs thousands."""
MAX_ZIP_MEMBERS = 200_000


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:80' -> '[::1]'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_problem(method: str, headers: dict, cookies: dict, query: dict, token: str, listen: bool) -> str:
    """Why this request is refused ('' when it passes). headers: lower-case names."""
    host = headers.get("host", "")
    if not listen and host_name(host) not in LOCAL_HOSTS:
        return f"Host {host!r} is not this computer (start studio with --listen to open it to a network)"
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin {origin!r} is another site"
    if method not in ("GET", "HEAD") and origin is None and headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return "a cross-site request without Origin"
    given = query.get("token") or cookies.get(TOKEN_COOKIE) or headers.get("x-studio-token") or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return "no valid token: open the address that studio printed (it ends with ?token=...)"
    return ""


def safe_name(name: str) -> str:
    """An uploaded file's own name without any folder part, or a UserError."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base in ("", ".", "..") or base.startswith("."):
        raise UserError(f"the upload name {name!r} is not a plain file name.")
    return base


def save_stream(chunks, target: Path, limit: int = MAX_UPLOAD_BYTES) -> int:
    """Write an upload's byte chunks to target, refusing more than `limit` bytes; returns the size."""
    size = 0
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                out.close()
                partial.unlink()
                raise UserError(f"the upload is larger than {limit / 1024**3:.1f} GiB; put it in a folder and point "
                                "Studio at the folder instead.")
            out.write(chunk)
    partial.replace(target)
    return size


def zip_problems(archive: zipfile.ZipFile, max_total: int, max_ratio: float, max_members: int) -> list[str]:
    """Every reason not to unpack this zip: paths that leave the folder, too many or too big members."""
    members = archive.infolist()
    problems = [f"{len(members):,} files (at most {max_members:,})"] if len(members) > max_members else []
    total = 0
    for info in members:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            problems.append(f"{info.filename!r} would be written outside the folder")
        if info.external_attr >> 28 == 0o12:  # a symlink (Unix mode in the high bits): it could point anywhere
            problems.append(f"{info.filename!r} is a link")
        total += info.file_size
        if info.file_size > 1024**2 and info.file_size > max_ratio * max(info.compress_size, 1):
            problems.append(f"{info.filename!r} unpacks {info.file_size / max(info.compress_size, 1):,.0f}x "
                            f"(at most {max_ratio}x: a zip bomb?)")
    if total > max_total:
        problems.append(f"it unpacks to {total / 1024**3:.1f} GiB (at most {max_total / 1024**3:.1f} GiB)")
    return problems


def unpack_zip(zip_path: Path, target: Path, max_total: int = MAX_UNZIPPED_BYTES, max_ratio: float = MAX_ZIP_RATIO,
               max_members: int = MAX_ZIP_MEMBERS) -> Path:
    """Unpack zip_path into the new folder target after checking every member; UserError lists what is wrong.

    The sizes in the zip's directory can lie, so the bytes written are counted again while unpacking."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise UserError(f"{zip_path.name} is not a valid zip file.") from None
    with archive:
        problems = zip_problems(archive, max_total, max_ratio, max_members)
        if problems:
            raise UserError(f"{zip_path.name} was not unpacked: {'; '.join(problems[:5])}.")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        written = 0
        for info in archive.infolist():
            out = partial.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(1024**2):
                    written += len(chunk)
                    if written > max_total:
                        dst.close()
                        shutil.rmtree(partial, ignore_errors=True)
                        raise UserError(f"{zip_path.name} unpacks to more than {max_total / 1024**3:.1f} GiB.")
                    dst.write(chunk)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target
