"""Reference IEEE 754 binary32/binary64 arithmetic for the RISC-V F/D tests.

Everything is computed with exact rational arithmetic (fractions.Fraction)
and a single explicit rounding step, so expected results and fflags do not
depend on the host FPU. RISC-V specifics implemented here:
  - tininess is detected after rounding (UF only when tiny and inexact),
  - every NaN result is the canonical NaN,
  - 0 * inf + qNaN raises NV,
  - FMIN/FMAX: -0 < +0, a single NaN operand yields the other operand,
  - float -> int conversions saturate (NaN -> max) and raise NV.
"""

from fractions import Fraction
from math import isqrt

NX, UF, OF, DZ, NV = 0x01, 0x02, 0x04, 0x08, 0x10
RNE, RTZ, RDN, RUP, RMM, DYN = 0, 1, 2, 3, 4, 7
RM_NAMES = {RNE: "rne", RTZ: "rtz", RDN: "rdn", RUP: "rup", RMM: "rmm", DYN: "dyn"}


class Fmt:
    def __init__(self, name, ebits, mbits):
        self.name = name
        self.ebits = ebits
        self.mbits = mbits
        self.width = 1 + ebits + mbits
        self.bias = (1 << (ebits - 1)) - 1
        self.emin = 1 - self.bias
        self.emax = self.bias
        self.expmask = (1 << ebits) - 1
        self.canon_nan = (self.expmask << mbits) | (1 << (mbits - 1))
        self.max_finite = ((self.expmask - 1) << mbits) | ((1 << mbits) - 1)

    def pos_inf(self):
        return self.expmask << self.mbits

    def sign_bit(self):
        return 1 << (self.width - 1)


S = Fmt("s", 8, 23)
D = Fmt("d", 11, 52)


# ---- decoding -------------------------------------------------------------

def decode(bits, f):
    """-> ('nan', is_signalling) | ('inf', sign) | ('num', sign, Fraction>=0)"""
    sign = (bits >> (f.width - 1)) & 1
    e = (bits >> f.mbits) & f.expmask
    m = bits & ((1 << f.mbits) - 1)
    if e == f.expmask:
        if m == 0:
            return ("inf", sign)
        return ("nan", (m >> (f.mbits - 1)) == 0)
    if e == 0:
        mag = Fraction(m) * Fraction(2) ** (f.emin - f.mbits)
    else:
        mag = Fraction((1 << f.mbits) | m) * Fraction(2) ** (e - f.bias - f.mbits)
    return ("num", sign, mag)


def is_snan(bits, f):
    d = decode(bits, f)
    return d[0] == "nan" and d[1]


def is_nan(bits, f):
    return decode(bits, f)[0] == "nan"


def value(bits, f):
    """signed Fraction (or None for inf/nan)"""
    d = decode(bits, f)
    if d[0] != "num":
        return None
    return -d[2] if d[1] else d[2]


# ---- rounding -------------------------------------------------------------

def floor_log2(x):
    """floor(log2(x)) for Fraction x > 0"""
    n, d = x.numerator, x.denominator
    e = n.bit_length() - d.bit_length()
    # adjust so that 2^e <= x < 2^(e+1)
    if e >= 0:
        if n < (d << e):
            e -= 1
    else:
        if (n << -e) < d:
            e -= 1
    return e


def round_int(x, rm, negative):
    """round a Fraction x >= 0 to an integer per rm; negative = sign of the
    real value (for directed modes). Returns (int, inexact)."""
    fl = x.numerator // x.denominator
    frac = x - fl
    if frac == 0:
        return fl, False
    half = Fraction(1, 2)
    if rm == RNE:
        up = frac > half or (frac == half and fl % 2 == 1)
    elif rm == RTZ:
        up = False
    elif rm == RDN:
        up = negative
    elif rm == RUP:
        up = not negative
    elif rm == RMM:
        up = frac >= half
    else:
        raise ValueError(rm)
    return fl + (1 if up else 0), True


def encode_finite(sign, mag, f):
    """exact encoding of a representable magnitude"""
    sb = sign << (f.width - 1)
    if mag == 0:
        return sb
    if mag < Fraction(2) ** f.emin:
        m = mag / Fraction(2) ** (f.emin - f.mbits)
        assert m.denominator == 1
        return sb | int(m)
    e = floor_log2(mag)
    m = mag / Fraction(2) ** (e - f.mbits)
    assert m.denominator == 1, (mag, e)
    m = int(m)
    assert (1 << f.mbits) <= m < (2 << f.mbits)
    return sb | ((e + f.bias) << f.mbits) | (m - (1 << f.mbits))


def round_to(sign, mag, f, rm, sticky=False):
    """Round sign*mag to format f. sticky: the true value is slightly larger
    than mag (used for inexact square roots). Returns (bits, flags)."""
    neg = sign == 1
    if mag == 0 and not sticky:
        return sign << (f.width - 1), 0
    e = floor_log2(mag)
    # unbounded exponent range, f.mbits+1 significant bits
    # sticky: the true value lies strictly between mag and mag + 2^-1600:
    # nudge by far less than any rounding step but more than that error, so
    # it is never a tie and always inexact
    nudge = Fraction(1, 1 << 200) if sticky else 0
    q_unb = Fraction(2) ** (e - f.mbits)
    n_unb, inexact = round_int(mag / q_unb + nudge, rm, neg)
    r_unb = n_unb * q_unb
    tiny = r_unb < Fraction(2) ** f.emin
    # bounded rounding
    q = Fraction(2) ** (max(e, f.emin) - f.mbits)
    x = mag / q + nudge
    n, inexact = round_int(x, rm, neg)
    r = n * q
    flags = 0
    if r >= Fraction(2) ** (f.emax + 1):
        flags = OF | NX
        to_inf = rm in (RNE, RMM) or (rm == RDN and neg) or (rm == RUP and not neg)
        if to_inf:
            return (sign << (f.width - 1)) | f.pos_inf(), flags
        return (sign << (f.width - 1)) | f.max_finite, flags
    if inexact:
        flags |= NX
        if tiny:
            flags |= UF
    return encode_finite(sign, r, f), flags


def round_signed(v, f, rm):
    """round a signed Fraction (nonzero or zero with +0)"""
    if v < 0:
        return round_to(1, -v, f, rm)
    return round_to(0, v, f, rm)


# ---- arithmetic -----------------------------------------------------------

def _nan_result(f, flags):
    return f.canon_nan, flags


def _sum_zero_sign(sa, sb, rm):
    """sign of an exact zero sum of two zero-or-cancelling terms"""
    if sa == sb:
        return sa
    return 1 if rm == RDN else 0


def add_terms(ta, tb, f, rm):
    """ta, tb are ('inf', s) or ('num', s, mag); exact sum, rounded."""
    if ta[0] == "inf" and tb[0] == "inf":
        if ta[1] != tb[1]:
            return _nan_result(f, NV)
        return (ta[1] << (f.width - 1)) | f.pos_inf(), 0
    if ta[0] == "inf":
        return (ta[1] << (f.width - 1)) | f.pos_inf(), 0
    if tb[0] == "inf":
        return (tb[1] << (f.width - 1)) | f.pos_inf(), 0
    va = -ta[2] if ta[1] else ta[2]
    vb = -tb[2] if tb[1] else tb[2]
    v = va + vb
    if v == 0:
        if ta[2] == 0 and tb[2] == 0:
            s = _sum_zero_sign(ta[1], tb[1], rm)
        else:
            s = 1 if rm == RDN else 0
        return s << (f.width - 1), 0
    return round_signed(v, f, rm)


def fadd(a, b, f, rm, negate_b=False):
    da, db = decode(a, f), decode(b, f)
    if da[0] == "nan" or db[0] == "nan":
        return _nan_result(f, NV if (is_snan(a, f) or is_snan(b, f)) else 0)
    if negate_b:
        db = (db[0], db[1] ^ 1) + tuple(db[2:])
    return add_terms(da, db, f, rm)


def fsub(a, b, f, rm):
    return fadd(a, b, f, rm, negate_b=True)


def fmul_term(da, db):
    """exact product term or None for 0*inf"""
    s = da[1] ^ db[1]
    if da[0] == "inf" or db[0] == "inf":
        other = db if da[0] == "inf" else da
        if other[0] == "num" and other[2] == 0:
            return None
        return ("inf", s)
    return ("num", s, da[2] * db[2])


def fmul(a, b, f, rm):
    da, db = decode(a, f), decode(b, f)
    if da[0] == "nan" or db[0] == "nan":
        return _nan_result(f, NV if (is_snan(a, f) or is_snan(b, f)) else 0)
    t = fmul_term(da, db)
    if t is None:
        return _nan_result(f, NV)
    if t[0] == "inf":
        return (t[1] << (f.width - 1)) | f.pos_inf(), 0
    if t[2] == 0:
        return t[1] << (f.width - 1), 0
    return round_to(t[1], t[2], f, rm)


def fdiv(a, b, f, rm):
    da, db = decode(a, f), decode(b, f)
    if da[0] == "nan" or db[0] == "nan":
        return _nan_result(f, NV if (is_snan(a, f) or is_snan(b, f)) else 0)
    s = da[1] ^ db[1]
    sb = s << (f.width - 1)
    if da[0] == "inf":
        if db[0] == "inf":
            return _nan_result(f, NV)
        return sb | f.pos_inf(), 0
    if db[0] == "inf":
        return sb, 0
    if db[2] == 0:
        if da[2] == 0:
            return _nan_result(f, NV)
        return sb | f.pos_inf(), DZ
    if da[2] == 0:
        return sb, 0
    return round_to(s, da[2] / db[2], f, rm)


def fsqrt(a, f, rm):
    da = decode(a, f)
    if da[0] == "nan":
        return _nan_result(f, NV if da[1] else 0)
    if da[0] == "inf":
        if da[1]:
            return _nan_result(f, NV)
        return a, 0
    if da[2] == 0:
        return a, 0  # sqrt(+-0) = +-0
    if da[1]:
        return _nan_result(f, NV)
    x = da[2]
    # exact square root if x is a perfect square of a dyadic rational
    k = 1600  # 4^k * 2^-1074 is still >= 2^2000: ample precision
    scaled = x * Fraction(4) ** k
    n = scaled.numerator // scaled.denominator
    r = isqrt(n)
    exact = (r * r == n) and (scaled.denominator == 1)
    root = Fraction(r) / Fraction(2) ** k
    return round_to(0, root, f, rm, sticky=not exact)


def ffma(a, b, c, f, rm, neg_prod=False, neg_c=False):
    da, db, dc = decode(a, f), decode(b, f), decode(c, f)
    if da[0] == "nan" or db[0] == "nan" or dc[0] == "nan":
        nv = is_snan(a, f) or is_snan(b, f) or is_snan(c, f)
        # RISC-V: inf * 0 raises NV even when the addend is a quiet NaN
        if da[0] != "nan" and db[0] != "nan" and fmul_term(da, db) is None:
            nv = True
        return _nan_result(f, NV if nv else 0)
    p = fmul_term(da, db)
    if p is None:
        return _nan_result(f, NV)
    if neg_prod:
        p = (p[0], p[1] ^ 1) + tuple(p[2:])
    if neg_c:
        dc = (dc[0], dc[1] ^ 1) + tuple(dc[2:])
    return add_terms(p, dc, f, rm)


def fmin_max(a, b, f, is_max):
    na, nb = is_nan(a, f), is_nan(b, f)
    flags = NV if (is_snan(a, f) or is_snan(b, f)) else 0
    if na and nb:
        return f.canon_nan, flags
    if na:
        return b, flags
    if nb:
        return a, flags
    va, vb = value(a, f), value(b, f)
    da, db = decode(a, f), decode(b, f)

    def key(d):
        if d[0] == "inf":
            return (Fraction(-1) if d[1] else Fraction(1)) * Fraction(10) ** 400
        return -d[2] if d[1] else d[2]
    ka, kb = key(da), key(db)
    if ka == kb:
        # equal values: only +-0 differ in sign; -0 < +0
        sa, sbb = da[1], db[1]
        if is_max:
            return (a if sa == 0 else b), flags
        return (a if sa == 1 else b), flags
    if is_max:
        return (a if ka > kb else b), flags
    return (a if ka < kb else b), flags


def fcmp(a, b, f, op):
    """op in 'eq','lt','le' -> (int, flags)"""
    na, nb = is_nan(a, f), is_nan(b, f)
    if na or nb:
        if op == "eq":
            return 0, NV if (is_snan(a, f) or is_snan(b, f)) else 0
        return 0, NV
    da, db = decode(a, f), decode(b, f)

    def key(d):
        if d[0] == "inf":
            return (Fraction(-1) if d[1] else Fraction(1)) * Fraction(10) ** 400
        return -d[2] if d[1] else d[2]
    ka, kb = key(da), key(db)
    r = {"eq": ka == kb, "lt": ka < kb, "le": ka <= kb}[op]
    return int(r), 0


def fclass(a, f):
    d = decode(a, f)
    if d[0] == "nan":
        return 1 << (8 if d[1] else 9)
    if d[0] == "inf":
        return 1 << (0 if d[1] else 7)
    s, mag = d[1], d[2]
    if mag == 0:
        return 1 << (3 if s else 4)
    sub = mag < Fraction(2) ** f.emin
    if s:
        return 1 << (2 if sub else 1)
    return 1 << (5 if sub else 6)


INT_RANGES = {
    "w": (-(1 << 31), (1 << 31) - 1, 32, True),
    "wu": (0, (1 << 32) - 1, 32, False),
    "l": (-(1 << 63), (1 << 63) - 1, 64, True),
    "lu": (0, (1 << 64) - 1, 64, False),
}


def sext(v, bits):
    v &= (1 << bits) - 1
    if v >> (bits - 1):
        v -= 1 << bits
    return v


def to_u64(v):
    return v & ((1 << 64) - 1)


def fcvt_to_int(a, f, kind, rm):
    """-> (64-bit register value, flags)"""
    lo, hi, width, signed = INT_RANGES[kind]
    d = decode(a, f)
    if d[0] == "nan":
        r, flags = hi, NV
    elif d[0] == "inf":
        r, flags = (lo if d[1] else hi), NV
    else:
        n, inexact = round_int(d[2], rm, d[1] == 1)
        if d[1]:
            n = -n
        if n < lo:
            r, flags = lo, NV
        elif n > hi:
            r, flags = hi, NV
        else:
            r, flags = n, (NX if inexact else 0)
    if width == 32:
        r = sext(r, 32)  # 32-bit results are sign-extended
    return to_u64(r), flags


def fcvt_from_int(x, kind, f, rm):
    lo, hi, width, signed = INT_RANGES[kind]
    x &= (1 << width) - 1
    if signed:
        x = sext(x, width)
    if x == 0:
        return 0, 0
    return round_signed(Fraction(x), f, rm)


def fcvt_float(a, src, dst, rm):
    d = decode(a, src)
    if d[0] == "nan":
        return dst.canon_nan, NV if d[1] else 0
    if d[0] == "inf":
        return (d[1] << (dst.width - 1)) | dst.pos_inf(), 0
    if d[2] == 0:
        return d[1] << (dst.width - 1), 0
    return round_to(d[1], d[2], dst, rm)


def fsgnj(a, b, f, kind):
    mask = f.sign_bit()
    sa, sb = a & mask, b & mask
    s = {"j": sb, "jn": sb ^ mask, "jx": sa ^ sb}[kind]
    return (a & ~mask & ((1 << f.width) - 1)) | s


# ---- helpers to build operands ---------------------------------------------

def fbits(v, f):
    """exact encoding of a representable value (Fraction/int/str special)"""
    if isinstance(v, str):
        neg = v.startswith("-")
        core = v.lstrip("+-")
        sb = (1 if neg else 0) << (f.width - 1)
        if core == "inf":
            return sb | f.pos_inf()
        if core == "0":
            return sb
        if core == "qnan":
            return sb | f.canon_nan
        if core == "snan":
            return sb | f.pos_inf() | 1
        if core == "max":
            return sb | f.max_finite
        if core == "minnorm":
            return sb | (1 << f.mbits)
        if core == "minsub":
            return sb | 1
        if core == "maxsub":
            return sb | ((1 << f.mbits) - 1)
        raise ValueError(v)
    v = Fraction(v)
    bits, flags = round_signed(v, f, RNE)
    assert flags == 0, ("not exactly representable", v)
    return bits
