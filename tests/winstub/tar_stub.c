/* Stand-in for tar.exe (bsdtar, in Windows 10 1803+ and 11), which wine lacks. It handles only what prepare_venv.bat
   runs, "tar -xf ZIP -C FOLDER", with the zipfile module of the embeddable Python named by FTG_TEST_UNZIP_PYTHON (a
   copy kept outside the project). An .exe, not a .cmd: cmd.exe runs a .cmd named without "call" and never returns. */
#include <process.h>
#include <stdlib.h>
#include <wchar.h>

int wmain(int argc, wchar_t **argv) {
    const wchar_t *python = _wgetenv(L"FTG_TEST_UNZIP_PYTHON");
    if (!python || argc != 5 || wcscmp(argv[1], L"-xf") || wcscmp(argv[3], L"-C")) return 2;
    wchar_t zip[4096], folder[4096];
    _snwprintf(zip, 4096, L"\"%ls\"", argv[2]);
    _snwprintf(folder, 4096, L"\"%ls\"", argv[4]);
    const wchar_t *args[] = {L"python", L"-c",
                             L"\"import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])\"",
                             zip, folder, NULL};
    return (int)_wspawnv(_P_WAIT, python, args);
}
