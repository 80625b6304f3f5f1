/* Test-only bcryptprimitives.dll for Debian 12's wine 8.0, which has none (newer wine has one). Rust's standard library
   (1.78+) imports ProcessPrng from it, so every Rust extension in the wheels fails to load under wine 8.0 with "DLL
   load failed ... Module not found": safetensors, tokenizers, pydantic_core, hf_xet. Windows's ProcessPrng fills
   the buffer from the system RNG and always returns TRUE; this one asks wine's bcrypt.dll for the same bytes. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size) {
    while (size) {
        ULONG chunk = size > 0x40000000 ? 0x40000000 : (ULONG)size;  /* BCryptGenRandom takes a ULONG count */
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += chunk;
        size -= chunk;
    }
    return TRUE;
}
