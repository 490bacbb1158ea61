//! Signed division by a constant without `idiv` (Hacker's Delight, 2nd ed., §10-1 to 10-5).
//!
//! Both tiers follow these plans: the baseline emitter mirrors [`DivPlan::quotient`]
//! instruction by instruction, and the optimizing tier builds the same arithmetic in
//! Cranelift IR (rather than Cranelift's own rules, which lack the unsigned path), so the tests of this file (against
//! `wrapping_div` on corner values) also pin down the machine code's arithmetic.

/// How to divide by one constant divisor `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DivPlan {
    /// `d == 0`: traps.
    Zero,
    /// `d == 1`: `n`.
    One,
    /// `d == -1`: `-n` wrapping (so `MIN / -1 = MIN`).
    MinusOne,
    /// `d == i64::MIN`: `(n == MIN) as i64`.
    Min,
    /// `|d| == 2^k`, 1 <= k <= 62: `(n + bias) >> k`, negated when `d < 0`, where
    /// `bias = (n >> 63) >>> (64 - k)` rounds toward zero.
    Pow2 { k: u32, negative: bool },
    /// Otherwise: `q = mulhs(n, m)`, corrected by `±n`, `>> s`, plus its own sign bit.
    Magic {
        m: i64,
        s: u32,
        add_n: bool,
        sub_n: bool,
    },
}

impl DivPlan {
    pub fn new(d: i64) -> DivPlan {
        match d {
            0 => DivPlan::Zero,
            1 => DivPlan::One,
            -1 => DivPlan::MinusOne,
            i64::MIN => DivPlan::Min,
            _ if d.unsigned_abs().is_power_of_two() => DivPlan::Pow2 {
                k: d.unsigned_abs().trailing_zeros(),
                negative: d < 0,
            },
            _ => {
                let (m, s) = magic(d);
                DivPlan::Magic {
                    m,
                    s,
                    add_n: d > 0 && m < 0,
                    sub_n: d < 0 && m > 0,
                }
            }
        }
    }

    /// `n / d` (wrapping, truncating), computed the way the emitted code does. `None` for
    /// `d == 0`. The tests' model of the emitted arithmetic.
    #[cfg(test)]
    pub fn quotient(self, n: i64) -> Option<i64> {
        Some(match self {
            DivPlan::Zero => return None,
            DivPlan::One => n,
            DivPlan::MinusOne => n.wrapping_neg(),
            DivPlan::Min => (n == i64::MIN) as i64,
            DivPlan::Pow2 { k, negative } => {
                let bias = ((n >> 63) as u64 >> (64 - k)) as i64;
                let q = n.wrapping_add(bias) >> k;
                if negative {
                    q.wrapping_neg()
                } else {
                    q
                }
            }
            DivPlan::Magic { m, s, add_n, sub_n } => {
                let mut q = ((n as i128 * m as i128) >> 64) as i64;
                if add_n {
                    q = q.wrapping_add(n);
                }
                if sub_n {
                    q = q.wrapping_sub(n);
                }
                q >>= s;
                q.wrapping_add((q as u64 >> 63) as i64)
            }
        })
    }
}

/// The magic multiplier and shift for a divisor with `2 <= |d| < 2^63` (Hacker's Delight
/// figure 10-1, 64-bit).
fn magic(d: i64) -> (i64, u32) {
    const TWO63: u64 = 1 << 63;
    let ad = d.unsigned_abs();
    let t = TWO63 + ((d as u64) >> 63);
    let anc = t - 1 - t % ad; // |nc|
    let mut p: u32 = 63;
    let mut q1 = TWO63 / anc;
    let mut r1 = TWO63 - q1 * anc;
    let mut q2 = TWO63 / ad;
    let mut r2 = TWO63 - q2 * ad;
    loop {
        p += 1;
        q1 = q1.wrapping_mul(2);
        r1 = r1.wrapping_mul(2);
        if r1 >= anc {
            q1 = q1.wrapping_add(1);
            r1 = r1.wrapping_sub(anc);
        }
        q2 = q2.wrapping_mul(2);
        r2 = r2.wrapping_mul(2);
        if r2 >= ad {
            q2 = q2.wrapping_add(1);
            r2 = r2.wrapping_sub(ad);
        }
        let delta = ad - r2;
        if !(q1 < delta || (q1 == delta && r1 == 0)) {
            break;
        }
    }
    let m = q2.wrapping_add(1) as i64;
    (if d < 0 { m.wrapping_neg() } else { m }, p - 64)
}

/// For `2 <= d`, not a power of two: `(m, s)` with `n / d == mulhu(n, m) >> s` for every
/// `0 <= n < 2^63` (Granlund and Montgomery, "Division by invariant integers using
/// multiplication", thm. 4.2 with 63-bit dividends: `l = ceil(log2 d)`,
/// `m = floor(2^(63 + l) / d) + 1` fits in 64 bits and needs no fix-up, `s = l - 1`).
/// A non-negative dividend divides with one `mul` and one shift instead of the signed
/// sequence's five instructions.
pub fn unsigned_magic(d: u64) -> (u64, u32) {
    debug_assert!(d >= 2 && !d.is_power_of_two());
    let l = 64 - (d - 1).leading_zeros();
    let m = (1u128 << (63 + l)) / d as u128 + 1;
    (m as u64, l - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corner_values() -> Vec<i64> {
        let mut v = vec![
            0,
            1,
            -1,
            2,
            -2,
            3,
            7,
            -7,
            13,
            100,
            i64::MAX,
            i64::MIN,
            i64::MAX - 1,
            i64::MIN + 1,
            1 << 31,
            -(1 << 31),
            (1 << 31) - 1,
            1 << 32,
            (1 << 62) + 5,
            -(1 << 62) - 5,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as i64);
            v.push((x as i64) >> (x % 64));
        }
        v
    }

    fn divisors() -> Vec<i64> {
        let mut d: Vec<i64> = (-300..=300).collect();
        for k in 0..63 {
            d.push(1 << k);
            d.push(-(1 << k));
            d.push((1 << k) + 1);
            d.push((1 << k) - 1);
            d.push(-(1 << k) - 1);
        }
        d.extend([
            i64::MIN,
            i64::MAX,
            i64::MIN + 1,
            1_000_000_007,
            -641,
            6700417,
        ]);
        d
    }

    #[test]
    fn every_plan_agrees_with_wrapping_div() {
        let ns = corner_values();
        for d in divisors() {
            let plan = DivPlan::new(d);
            for &n in &ns {
                let expected = (d != 0).then(|| n.wrapping_div(d));
                assert_eq!(plan.quotient(n), expected, "{n} / {d} with {plan:?}");
            }
        }
    }

    #[test]
    fn known_magic_numbers_match_hackers_delight() {
        assert_eq!(magic(7), (0x4924_9249_2492_4925, 1));
        assert_eq!(magic(3), (0x5555_5555_5555_5556, 0));
        assert_eq!(magic(-3), (0x5555_5555_5555_5555, 1));
    }

    #[test]
    fn unsigned_magic_divides_every_non_negative_dividend_exactly() {
        let dividends = (0..5000i64)
            .chain((0..5000).map(|k| i64::MAX - k))
            .chain((0..62).map(|k| 1i64 << k))
            .chain((0..62).map(|k| (1i64 << k) - 1));
        let dividends: Vec<i64> = dividends.collect();
        let divisors = (3..2000u64)
            .chain([1_000_003, 1 << 40 | 1, i64::MAX as u64, (1u64 << 62) + 1])
            .filter(|d| !d.is_power_of_two());
        for d in divisors {
            let (m, s) = unsigned_magic(d);
            for &n in &dividends {
                let q = (((n as u128) * (m as u128)) >> 64) as u64 >> s;
                assert_eq!(q, n as u64 / d, "{n} / {d}");
            }
        }
    }
}
