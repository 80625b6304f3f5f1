#!/usr/bin/env bash
# Installs what tests/test_windows_launchers.py needs to run the .bat files under a real cmd.exe (Debian, as root):
#   - wine64 (Debian 12 ships wine 8.0) and the mingw-w64 C compiler for the stand-in python.exe;
#   - cmd.exe from Debian 13's libwine (wine 10.0) at /opt/ftg-wine-cmd/cmd.exe. Wine 8.0's own cmd.exe runs both
#     sides of "a && b" and "a || b" whatever a returned (its source: "FIXME: Only if previous call worked for && or
#     failed for ||") and turns every non-zero exit code of "call x.bat" into 1; prepare_venv.bat relies on both.
#     cmd.exe is a Windows program, so wine 10's runs on wine 8's runtime; nothing else from Debian 13 is installed.
# Each part is skipped when already there, so a second run takes well under a second.
set -euo pipefail
CMD_DIR=/opt/ftg-wine-cmd
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || [ ! -x /usr/lib/wine/wine64 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wine64 gcc-mingw-w64-x86-64-win32
fi
if [ ! -f "$CMD_DIR/cmd.exe" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # The machine's own Debian mirror, with the trixie suite instead of bookworm.
    mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
    echo "deb $mirror trixie main" > "$work/trixie.list"
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    apt_opts=(-o "Dir::Etc::SourceList=$work/trixie.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -q
    (cd "$work" && apt-get "${apt_opts[@]}" download libwine)   # 111 MB; only cmd.exe (1.9 MB) is kept
    dpkg-deb -x "$work"/libwine_*.deb "$work/x"
    mkdir -p "$CMD_DIR"
    cp "$work/x/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/cmd.exe" "$CMD_DIR/cmd.exe"
fi
echo "wine tests ready: $(/usr/lib/wine/wine64 --version), cmd.exe from $CMD_DIR"
