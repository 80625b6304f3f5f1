/* Stand-in for python.exe in tests/test_windows_launchers.py: built with mingw-w64, run by wine's cmd.exe.
 *
 * Each run appends one record, in UTF-8, to the file named by FTG_STUB_LOG:
 *     cwd=<working directory>
 *     arg=<argv[1]>
 *     ...
 *     end
 * It prints FTG_STUB_STDOUT (if set), then exits with the number in FTG_STUB_EXIT (0 if unset); when
 * FTG_STUB_EXIT_ARG is set, only a run that has that exact argument gets FTG_STUB_EXIT, the others exit 0.
 * "python -m venv DIR" (or "py -3.12 -m venv DIR") also copies this program to DIR\Scripts\python.exe, where a
 * real venv puts its python.
 * The wide (UTF-16) command line is read, so spaces and Cyrillic arrive exactly as cmd passed them. */
#include <windows.h>
#include <shellapi.h>
#include <stdio.h>
#include <stdlib.h>

#define BIG 32768

static void write_line(FILE *f, const wchar_t *prefix, const wchar_t *text) {
    static wchar_t line[BIG];
    static char bytes[4 * BIG];
    _snwprintf(line, BIG - 1, L"%ls%ls\n", prefix, text);
    line[BIG - 1] = 0;
    int n = WideCharToMultiByte(CP_UTF8, 0, line, -1, bytes, sizeof bytes, NULL, NULL);
    if (n > 1) fwrite(bytes, 1, (size_t)(n - 1), f);
}

static void make_venv(const wchar_t *dir) {
    wchar_t self[BIG], target[BIG];
    GetModuleFileNameW(NULL, self, BIG);
    CreateDirectoryW(dir, NULL);
    _snwprintf(target, BIG - 1, L"%ls\\Scripts", dir);
    CreateDirectoryW(target, NULL);
    _snwprintf(target, BIG - 1, L"%ls\\Scripts\\python.exe", dir);
    CopyFileW(self, target, FALSE);
}

int main(void) {
    int argc = 0;
    wchar_t **argv = CommandLineToArgvW(GetCommandLineW(), &argc);
    if (!argv) return 99;

    static wchar_t path[BIG];
    if (GetEnvironmentVariableW(L"FTG_STUB_LOG", path, BIG)) {
        FILE *f = _wfopen(path, L"ab");
        if (f) {
            GetCurrentDirectoryW(BIG, path);
            write_line(f, L"cwd=", path);
            for (int i = 1; i < argc; i++) write_line(f, L"arg=", argv[i]);
            fputs("end\n", f);
            fclose(f);
        }
    }
    for (int i = 1; i + 2 < argc; i++)
        if (wcscmp(argv[i], L"-m") == 0 && wcscmp(argv[i + 1], L"venv") == 0) make_venv(argv[i + 2]);

    char text[4096];
    if (GetEnvironmentVariableA("FTG_STUB_STDOUT", text, sizeof text)) {
        puts(text);
        fflush(stdout);
    }
    char code[32];
    if (!GetEnvironmentVariableA("FTG_STUB_EXIT", code, sizeof code)) return 0;
    if (GetEnvironmentVariableW(L"FTG_STUB_EXIT_ARG", path, BIG)) {
        int found = 0;
        for (int i = 1; i < argc; i++) found |= wcscmp(argv[i], path) == 0;
        if (!found) return 0;
    }
    return atoi(code);
}
