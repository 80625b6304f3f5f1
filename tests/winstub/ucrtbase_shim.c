/* Test-only stand-in for ucrtbase.dll under Debian 12's wine 8.0, whose ucrtbase.dll has no C99 complex functions:
   they are stubs that abort the process ("Unimplemented function ucrtbase.dll.crealf"), and numpy 2.4's
   _multiarray_umath.pyd calls crealf, cimagf, ... while it is imported. This DLL is named ucrtbase.dll, forwards
   every other export to wine's own ucrtbase.dll (copied beside it as ucrtbase_wine.dll; the .def file is generated
   from its export table by install_wine8_shims in tests/test_windows_real_python.py) and implements the complex
   family here, with mingw-w64's libmingwex (newer wine implements them in ucrtbase itself; not checked here).

   ABI: the UCRT's <complex.h> types are structs, not C99 _Complex: _Fcomplex {float[2]} (8 bytes: passed and
   returned in a general register), _Dcomplex {double[2]} and _Lcomplex {long double[2]} (16 bytes: passed by
   pointer, returned through a hidden pointer). MSVC's long double is double, so the "l" functions are the double
   ones; GCC's 80-bit long double is never used. */
#define _GNU_SOURCE  /* for clog10 and clog10f in <complex.h> */
#include <complex.h>
#include <math.h>

typedef struct { float v[2]; } Fc;
typedef struct { double v[2]; } Dc;  /* _Dcomplex and _Lcomplex */

static double _Complex d(Dc z) { return __builtin_complex(z.v[0], z.v[1]); }
static float _Complex f(Fc z) { return __builtin_complex(z.v[0], z.v[1]); }
static Dc D(double _Complex z) { return (Dc){{creal(z), cimag(z)}}; }
static Fc F(float _Complex z) { return (Fc){{crealf(z), cimagf(z)}}; }

/* complex -> complex: cacos, cacosf, cacosl, ... */
#define CC(name)                                                \
    Dc shim_##name(Dc z) { return D(name(d(z))); }              \
    Fc shim_##name##f(Fc z) { return F(name##f(f(z))); }        \
    Dc shim_##name##l(Dc z) { return D(name(d(z))); }
CC(cacos) CC(casin) CC(catan) CC(cacosh) CC(casinh) CC(catanh) CC(ccos) CC(csin) CC(ctan) CC(ccosh) CC(csinh)
CC(ctanh) CC(cexp) CC(clog) CC(clog10) CC(csqrt) CC(cproj) CC(conj)

/* complex -> real: cabs, carg, cimag, creal (wine has creal itself), norm (the squared magnitude) */
#define CR(name)                                                \
    double shim_##name(Dc z) { return name(d(z)); }             \
    float shim_##name##f(Fc z) { return name##f(f(z)); }        \
    double shim_##name##l(Dc z) { return name(d(z)); }
CR(cabs) CR(carg) CR(cimag) CR(creal)
double shim_norm(Dc z) { return z.v[0] * z.v[0] + z.v[1] * z.v[1]; }
float shim_normf(Fc z) { return z.v[0] * z.v[0] + z.v[1] * z.v[1]; }
double shim_norml(Dc z) { return shim_norm(z); }

Dc shim_cpow(Dc z, Dc w) { return D(cpow(d(z), d(w))); }
Fc shim_cpowf(Fc z, Fc w) { return F(cpowf(f(z), f(w))); }
Dc shim_cpowl(Dc z, Dc w) { return shim_cpow(z, w); }

/* The UCRT's helpers for C code without _Complex: build, complex * complex, complex * real (no special cases) */
Fc shim__FCbuild(float re, float im) { return (Fc){{re, im}}; }
Dc shim__LCbuild(double re, double im) { return (Dc){{re, im}}; }
Dc shim__Cmulcc(Dc a, Dc b) { return (Dc){{a.v[0] * b.v[0] - a.v[1] * b.v[1], a.v[0] * b.v[1] + a.v[1] * b.v[0]}}; }
Fc shim__FCmulcc(Fc a, Fc b) { return (Fc){{a.v[0] * b.v[0] - a.v[1] * b.v[1], a.v[0] * b.v[1] + a.v[1] * b.v[0]}}; }
Dc shim__LCmulcc(Dc a, Dc b) { return shim__Cmulcc(a, b); }
Dc shim__Cmulcr(Dc a, double b) { return (Dc){{a.v[0] * b, a.v[1] * b}}; }
Fc shim__FCmulcr(Fc a, float b) { return (Fc){{a.v[0] * b, a.v[1] * b}}; }
Dc shim__LCmulcr(Dc a, double b) { return shim__Cmulcr(a, b); }
