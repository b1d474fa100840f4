//! The C library's number and address parsers, as ipvsadm relies on them (`strtol`, `atoi`,
//! `inet_aton`, `inet_pton`, `inet_ntop`), so that xvsadm accepts and prints exactly what
//! ipvsadm does.
use std::net::{Ipv4Addr, Ipv6Addr};

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn digit_value(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some((b - b'0') as u32),
        b'a'..=b'z' => Some((b - b'a') as u32 + 10),
        b'A'..=b'Z' => Some((b - b'A') as u32 + 10),
        _ => None,
    }
}

/// What `strtol`/`strtoul` report: the value, how many bytes were consumed (0 when no digits),
/// and whether it overflowed (ERANGE; the value is then clamped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strto {
    pub value: i128,
    pub consumed: usize,
    pub overflow: bool,
}

/// `strtol(s, &end, base)` on a 64-bit `long`: leading white space, a sign, with base 0 a
/// `0x` (hex) or `0` (octal) prefix.
pub(crate) fn strtol(s: &str, base: u32) -> Strto {
    strto(s, base, i64::MIN as i128, i64::MAX as i128, false)
}

/// `strtoul(s, &end, base)` on a 64-bit `unsigned long` (a minus sign negates modulo 2^64).
pub(crate) fn strtoul(s: &str, base: u32) -> Strto {
    strto(s, base, 0, u64::MAX as i128, true)
}

fn strto(s: &str, base: u32, min: i128, max: i128, unsigned: bool) -> Strto {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let mut base = base;
    if (base == 0 || base == 16)
        && i + 1 < b.len()
        && b[i] == b'0'
        && (b[i + 1] | 0x20) == b'x'
        && i + 2 < b.len()
        && digit_value(b[i + 2]).is_some_and(|d| d < 16)
    {
        i += 2;
        base = 16;
    } else if base == 0 {
        base = if i < b.len() && b[i] == b'0' { 8 } else { 10 };
    }
    let start = i;
    let mut mag: i128 = 0;
    let mut big = false;
    while i < b.len() {
        match digit_value(b[i]) {
            Some(d) if d < base => {
                if !big {
                    mag = mag * base as i128 + d as i128;
                    if mag > u64::MAX as i128 + 1 {
                        big = true;
                    }
                }
                i += 1;
            }
            _ => break,
        }
    }
    if i == start {
        return Strto {
            value: 0,
            consumed: 0,
            overflow: false,
        };
    }
    let (value, overflow) = if unsigned {
        if big || mag > max {
            (max, true)
        } else if neg {
            ((u64::MAX as i128 + 1 - mag) % (u64::MAX as i128 + 1), false)
        } else {
            (mag, false)
        }
    } else {
        let v = if neg { -mag } else { mag };
        if big || v > max {
            (max, true)
        } else if v < min {
            (min, true)
        } else {
            (v, false)
        }
    };
    Strto {
        value,
        consumed: i,
        overflow,
    }
}

/// ipvsadm's `string_to_number`: a whole decimal number within [min, max].
pub(crate) fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let r = strtol(s, 10);
    if r.consumed == s.len() && r.consumed != 0 && !r.overflow {
        let v = r.value as i64;
        if min <= v && v <= max {
            return Some(v);
        }
    }
    None
}

/// `atoi`: leading white space, a sign and digits; 0 when there are none.
pub(crate) fn atoi(s: &str) -> i64 {
    // glibc's atoi is (int) strtol(s, NULL, 10).
    strtol(s, 10).value as i64 as i32 as i64
}

/// `inet_aton` (glibc): one to four parts separated by dots, each decimal, octal (`0`) or hex
/// (`0x`), the last part filling the remaining bytes; trailing white space ends the address.
pub(crate) fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u32> = Vec::new();
    let mut i = 0;
    let last;
    loop {
        if i >= b.len() || !b[i].is_ascii_digit() {
            return None;
        }
        let r = strtoul(&s[i..], 0);
        if r.overflow || r.value > 0xffff_ffff {
            return None;
        }
        let val = r.value as u32;
        i += r.consumed;
        if i < b.len() && b[i] == b'.' {
            if parts.len() > 2 || val > 0xff {
                return None;
            }
            parts.push(val);
            i += 1;
        } else {
            last = val;
            break;
        }
    }
    if i < b.len() && !(b[i].is_ascii() && is_c_space(b[i])) {
        return None;
    }
    let max: [u32; 4] = [0xffff_ffff, 0x00ff_ffff, 0xffff, 0xff];
    if last > max[parts.len()] {
        return None;
    }
    let mut word: u32 = 0;
    for (k, p) in parts.iter().enumerate() {
        word |= p << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(word | last))
}

/// `inet_pton(AF_INET6, ...)`.
pub(crate) fn inet_pton6(s: &str) -> Option<Ipv6Addr> {
    // The standard parser follows the same grammar (RFC 4291 text forms, an embedded dotted
    // quad at the end, no zone index).
    s.parse().ok()
}

/// `inet_pton(AF_INET, ...)`: exactly four decimal parts.
pub(crate) fn inet_pton4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// `inet_ntop(AF_INET6, ...)` as glibc writes it: the longest run (the first of equals) of two
/// or more zero groups becomes `::`, groups in lower-case hex, and a trailing dotted quad for
/// `::a.b.c.d` and `::ffff:a.b.c.d`.
pub(crate) fn ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let (mut cur_base, mut cur_len) = (None::<usize>, 0usize);
    for (i, word) in w.iter().enumerate() {
        if *word == 0 {
            if cur_base.is_none() {
                cur_base = Some(i);
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base.is_some() {
            if best_base.is_none() || cur_len > best_len {
                best_base = cur_base;
                best_len = cur_len;
            }
            cur_base = None;
        }
    }
    if cur_base.is_some() && (best_base.is_none() || cur_len > best_len) {
        best_base = cur_base;
        best_len = cur_len;
    }
    if best_base.is_some() && best_len < 2 {
        best_base = None;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some(bb) = best_base {
            if i >= bb && i < bb + best_len {
                if i == bb {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == Some(0) && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            return out;
        }
        out.push_str(&format!("{:x}", w[i]));
        i += 1;
    }
    if let Some(bb) = best_base {
        if bb + best_len == 8 {
            out.push(':');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_like_c() {
        assert_eq!(string_to_number("42", 0, 100), Some(42));
        assert_eq!(string_to_number(" +42", 0, 100), Some(42));
        assert_eq!(string_to_number("42 ", 0, 100), None);
        assert_eq!(string_to_number("", 0, 100), None);
        assert_eq!(string_to_number("-1", 0, 100), None);
        assert_eq!(string_to_number("-1", -5, 100), Some(-1));
        assert_eq!(string_to_number("0x10", 0, 100), None);
        assert_eq!(
            string_to_number("99999999999999999999999", 0, i64::MAX),
            None
        );
        assert_eq!(atoi("64abc"), 64);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("  -3"), -3);
    }

    #[test]
    fn inet_aton_like_glibc() {
        let a = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("10.1.2").as_deref(), Some("10.1.0.2"));
        assert_eq!(a("167772161").as_deref(), Some("10.0.0.1"));
        assert_eq!(a("0x0a.010.0.1").as_deref(), Some("10.8.0.1"));
        assert_eq!(a("64").as_deref(), Some("0.0.0.64"));
        assert_eq!(a("1.2.3.4 junk").as_deref(), Some("1.2.3.4"));
        assert_eq!(a("256.0.0.1"), None);
        assert_eq!(a("1.2.3.4.5"), None);
        assert_eq!(a("1.2.3.256"), None);
        assert_eq!(a("08.1.1.1"), None);
        assert_eq!(a("-1.2.3.4"), None);
        assert_eq!(a(""), None);
        assert_eq!(a("www"), None);
        assert_eq!(a("1.2.3.4x"), None);
    }

    #[test]
    fn ntop6_like_glibc() {
        let n = |s: &str| ntop6(&s.parse().unwrap());
        assert_eq!(n("fd00::1"), "fd00::1");
        assert_eq!(n("::"), "::");
        assert_eq!(n("::1"), "::1");
        assert_eq!(n("fd00:0:0:1::"), "fd00:0:0:1::");
        assert_eq!(n("1:0:2:0:3:0:4:0"), "1:0:2:0:3:0:4:0");
        assert_eq!(n("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
        assert_eq!(n("1:0:0:2:3:0:0:4"), "1::2:3:0:0:4");
        assert_eq!(n("::ffff:10.0.0.1"), "::ffff:10.0.0.1");
        assert_eq!(n("::10.0.0.1"), "::10.0.0.1");
        assert_eq!(n("::0.0.1.0"), "::100");
        assert_eq!(n("FD00:ABCD::"), "fd00:abcd::");
    }
}
