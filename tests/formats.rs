//! Checks the small-float codecs and the packers against references written here from
//! the format definitions alone: an f64 decoder built from the bit layout, and a
//! brute-force encoder that scans every code for the nearest value.

use fleetmoe::formats::*;
use fleetmoe::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which codes a format gives to NaN and inf.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// e5m2: all-ones exponent is inf (mantissa 0) or NaN.
    Ieee,
    /// e4m3fn: S.1111.111 is NaN.
    Fn,
    /// e4m3fnuz: 0x80 is NaN, no −0.
    Fnuz,
    /// MX fp6 / fp4: all finite.
    Mx,
}

#[derive(Clone, Copy)]
struct Layout {
    exp: u32,
    man: u32,
    bias: i32,
    kind: Kind,
}

const E4M3FN: Layout = Layout {
    exp: 4,
    man: 3,
    bias: 7,
    kind: Kind::Fn,
};
const E4M3FNUZ: Layout = Layout {
    exp: 4,
    man: 3,
    bias: 8,
    kind: Kind::Fnuz,
};
const E5M2: Layout = Layout {
    exp: 5,
    man: 2,
    bias: 15,
    kind: Kind::Ieee,
};
const E3M2: Layout = Layout {
    exp: 3,
    man: 2,
    bias: 3,
    kind: Kind::Mx,
};
const E2M3: Layout = Layout {
    exp: 2,
    man: 3,
    bias: 1,
    kind: Kind::Mx,
};
const E2M1: Layout = Layout {
    exp: 2,
    man: 1,
    bias: 1,
    kind: Kind::Mx,
};

impl Layout {
    fn bits(self) -> u32 {
        1 + self.exp + self.man
    }

    fn sign_bit(self) -> u8 {
        1 << (self.exp + self.man)
    }

    fn count(self) -> u16 {
        1 << self.bits()
    }

    /// Value of a code straight from the definition, in f64.
    fn decode(self, code: u8) -> f64 {
        let sign = if code & self.sign_bit() != 0 {
            -1.0
        } else {
            1.0
        };
        let e = u32::from(code >> self.man) & ((1 << self.exp) - 1);
        let m = u32::from(code) & ((1 << self.man) - 1);
        let e_all_ones = e == (1 << self.exp) - 1;
        let m_all_ones = m == (1 << self.man) - 1;
        match self.kind {
            Kind::Ieee if e_all_ones => {
                return if m == 0 {
                    sign * f64::INFINITY
                } else {
                    f64::NAN
                };
            }
            Kind::Fn if e_all_ones && m_all_ones => return f64::NAN,
            Kind::Fnuz if code == 0x80 => return f64::NAN,
            _ => {}
        }
        let frac = f64::from(m) / f64::from(1u32 << self.man);
        let mag = if e == 0 {
            frac * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + frac) * 2f64.powi(e as i32 - self.bias)
        };
        sign * mag
    }

    /// (value, code) of every finite non-negative code, ascending.
    fn positive_values(self) -> Vec<(f64, u8)> {
        let mut v: Vec<(f64, u8)> = (0..self.sign_bit())
            .map(|c| (self.decode(c), c))
            .filter(|(x, _)| x.is_finite())
            .collect();
        v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        v
    }

    fn expected_nan(self) -> u8 {
        match self.kind {
            Kind::Ieee | Kind::Fn => 0x7F,
            Kind::Fnuz => 0x80,
            Kind::Mx => 0x00,
        }
    }

    /// Brute force: nearest finite value by absolute difference, ties to the even code
    /// (even mantissa LSB), saturating at the largest finite value.
    fn encode(self, table: &[(f64, u8)], x: f32) -> u8 {
        if x.is_nan() {
            return self.expected_nan();
        }
        let a = f64::from(x.abs());
        let (max, max_code) = *table.last().unwrap();
        let mag = if a > max {
            max_code
        } else {
            let mut best = table[0];
            for &(v, c) in table {
                let d = (v - a).abs();
                let bd = (best.0 - a).abs();
                if d < bd || (d == bd && c & 1 == 0 && best.1 & 1 == 1) {
                    best = (v, c);
                }
            }
            best.1
        };
        if x.is_sign_negative() && !(self.kind == Kind::Fnuz && mag == 0) {
            mag | self.sign_bit()
        } else {
            mag
        }
    }
}

/// Exact 2^e as f32 (f32::powi loses the deep subnormals).
fn p2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

fn next_up(x: f32) -> f32 {
    debug_assert!(x >= 0.0 && x.is_finite());
    f32::from_bits(x.to_bits() + 1)
}

fn next_down(x: f32) -> f32 {
    debug_assert!(x > 0.0 && x.is_finite());
    f32::from_bits(x.to_bits() - 1)
}

/// Inputs that probe every rounding boundary of a format plus random values.
fn probe_inputs(layout: Layout, seed: u64) -> Vec<f32> {
    let table = layout.positive_values();
    let values: Vec<f64> = table.iter().map(|p| p.0).collect();
    let step_at_max = values[values.len() - 1] - values[values.len() - 2];
    let mut points: Vec<f64> = values.clone();
    // Midpoints, including the one between 0 and the smallest subnormal and the one
    // between MAX and the value the next code would have.
    for w in values.windows(2) {
        points.push((w[0] + w[1]) / 2.0);
    }
    let max = values[values.len() - 1];
    points.push(max + step_at_max / 2.0);
    points.push(max + step_at_max);
    points.push(max * 2.0);
    let mut xs = Vec::new();
    for p in points {
        let x = p as f32;
        assert_eq!(f64::from(x), p, "probe point must be exact in f32");
        xs.push(x);
        if x > 0.0 {
            xs.push(next_up(x));
            xs.push(next_down(x));
        }
    }
    xs.extend([
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        1e-30,
        1e-10,
        1e10,
        1e30,
        f32::MAX,
        f32::INFINITY,
    ]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Random f32 across the format's range, a few binades either side.
    let emin = 1 - layout.bias - layout.man as i32 - 4;
    let emax = (1 << layout.exp) - 1 - layout.bias + 3;
    for _ in 0..4000 {
        let e = rng.random_range(emin..=emax);
        let bits = (((e + 127) as u32) << 23) | (rng.random::<u32>() & 0x7F_FFFF);
        xs.push(f32::from_bits(bits));
    }
    // Arbitrary bit patterns: NaNs, infs, subnormals, anything.
    for _ in 0..1000 {
        xs.push(f32::from_bits(rng.random::<u32>()).abs());
    }
    let negated: Vec<f32> = xs.iter().map(|x| -x).collect();
    xs.extend(negated);
    xs.push(f32::NAN);
    xs.push(-f32::NAN);
    xs
}

fn check_decode_all<T: MiniFloat>(layout: Layout) {
    assert_eq!(T::BITS, layout.bits(), "{}", T::NAME);
    for code in 0..layout.count() {
        let code = code as u8;
        let want = layout.decode(code);
        let got = T::from_bits(code).to_f32();
        if want.is_nan() {
            assert!(got.is_nan(), "{} code {code:#04x}: {got}", T::NAME);
        } else {
            assert_eq!(f64::from(got), want, "{} code {code:#04x}", T::NAME);
            assert_eq!(
                got.is_sign_negative(),
                want.is_sign_negative(),
                "{} code {code:#04x} sign",
                T::NAME
            );
        }
        // High bits beyond BITS are ignored.
        let dirty = code | !(((1u16 << layout.bits()) - 1) as u8);
        assert_eq!(T::from_bits(dirty).to_bits(), code, "{}", T::NAME);
    }
    let max = layout.positive_values().last().unwrap().0;
    assert_eq!(f64::from(T::MAX), max, "{} MAX", T::NAME);
}

fn check_round_trip<T: MiniFloat>(layout: Layout) {
    for code in 0..layout.count() {
        let code = code as u8;
        let v = layout.decode(code);
        if v.is_nan() || v.is_infinite() {
            continue; // NaN has no value; inf saturates by contract
        }
        let back = T::from_f32(T::from_bits(code).to_f32()).to_bits();
        assert_eq!(back, code, "{} code {code:#04x}", T::NAME);
    }
}

fn check_encode_brute_force<T: MiniFloat>(layout: Layout, seed: u64) {
    let table = layout.positive_values();
    let xs = probe_inputs(layout, seed);
    for &x in &xs {
        let want = layout.encode(&table, x);
        let got = T::from_f32(x).to_bits();
        assert_eq!(
            got,
            want,
            "{} from_f32({x:e}) (bits {:#010x})",
            T::NAME,
            x.to_bits()
        );
    }
    // The slice helpers agree with the scalar ones.
    let codes = encode::<T>(&xs);
    let back = decode::<T>(&codes);
    for ((&x, &c), &y) in xs.iter().zip(&codes).zip(&back) {
        assert_eq!(c, T::from_f32(x).to_bits());
        let r = round_to::<T>(x);
        assert!(r == y || (r.is_nan() && y.is_nan()), "{} {x}", T::NAME);
    }
}

fn check_format<T: MiniFloat>(layout: Layout, seed: u64) {
    check_decode_all::<T>(layout);
    check_round_trip::<T>(layout);
    check_encode_brute_force::<T>(layout, seed);
}

#[test]
fn e4m3fn_matches_reference() {
    check_format::<F8E4M3>(E4M3FN, 1);
}

#[test]
fn e4m3fnuz_matches_reference() {
    check_format::<F8E4M3Fnuz>(E4M3FNUZ, 2);
}

#[test]
fn e5m2_matches_reference() {
    check_format::<F8E5M2>(E5M2, 3);
}

#[test]
fn e3m2_matches_reference() {
    check_format::<F6E3M2>(E3M2, 4);
}

#[test]
fn e2m3_matches_reference() {
    check_format::<F6E2M3>(E2M3, 5);
}

#[test]
fn e2m1_matches_reference() {
    check_format::<F4E2M1>(E2M1, 6);
}

fn bits<T: MiniFloat>(x: f32) -> u8 {
    T::from_f32(x).to_bits()
}

#[test]
fn names_and_max() {
    assert_eq!(
        [
            F8E4M3::NAME,
            F8E4M3Fnuz::NAME,
            F8E5M2::NAME,
            F6E3M2::NAME,
            F6E2M3::NAME,
            F4E2M1::NAME,
            E8M0::NAME
        ],
        ["e4m3fn", "e4m3fnuz", "e5m2", "e3m2", "e2m3", "e2m1", "e8m0"]
    );
    assert_eq!(F8E4M3::MAX, 448.0);
    assert_eq!(F8E4M3Fnuz::MAX, 240.0);
    assert_eq!(F8E5M2::MAX, 57344.0);
    assert_eq!(F6E3M2::MAX, 28.0);
    assert_eq!(F6E2M3::MAX, 7.5);
    assert_eq!(F4E2M1::MAX, 6.0);
    assert_eq!(f64::from(E8M0::MAX), 2f64.powi(127));
    assert_eq!(F8E4M3::ZERO.to_f32(), 0.0);
    assert_eq!(f32::from(F4E2M1(3)), 1.5);
}

#[test]
fn known_values() {
    assert_eq!(bits::<F8E4M3>(448.0), 0x7E);
    assert_eq!(bits::<F8E4M3Fnuz>(240.0), 0x7F);
    assert!(F8E4M3Fnuz(0x80).to_f32().is_nan());
    assert!(F8E4M3Fnuz(0x80).is_nan());
    assert!(F8E4M3(0x7F).to_f32().is_nan());
    assert!(F8E4M3(0xFF).to_f32().is_nan());
    assert_eq!(F8E4M3(0x80).to_f32().to_bits(), (-0.0f32).to_bits());
    assert_eq!(F8E4M3(0x38).to_f32(), 1.0);
    assert_eq!(F8E4M3Fnuz(0x40).to_f32(), 1.0);
    assert_eq!(F8E5M2(0x3C).to_f32(), 1.0);
    assert_eq!(F8E5M2(0x7C).to_f32(), f32::INFINITY);
    assert_eq!(F8E5M2(0xFC).to_f32(), f32::NEG_INFINITY);
    assert_eq!(F8E5M2(0x7B).to_f32(), 57344.0);
    let e2m1: Vec<f32> = (0..8).map(|c| F4E2M1(c).to_f32()).collect();
    assert_eq!(e2m1, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
    assert_eq!(F4E2M1(0xF).to_f32(), -6.0);
    assert_eq!(F6E3M2(0x1F).to_f32(), 28.0);
    assert_eq!(F6E2M3(0x1F).to_f32(), 7.5);
    assert_eq!(E8M0(127).to_f32(), 1.0);
    assert!(E8M0(0xFF).to_f32().is_nan());
    assert_eq!(E8M0(128).to_f32(), 2.0);
    assert_eq!(E8M0(0).to_f32(), p2(-127));
    assert_eq!(E8M0(254).to_f32(), p2(127));
}

#[test]
fn ties_go_to_even_mantissa() {
    // e4m3fn: 17 sits between 16 (mantissa 000) and 18 (001).
    assert_eq!(F8E4M3::from_f32(17.0).to_f32(), 16.0);
    assert_eq!(F8E4M3::from_f32(19.0).to_f32(), 20.0);
    // Sticky bit: one ulp above a tie rounds up, one below rounds down.
    assert_eq!(F8E4M3::from_f32(next_up(17.0)).to_f32(), 18.0);
    assert_eq!(F8E4M3::from_f32(next_down(19.0)).to_f32(), 18.0);
    // e2m1 table: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
    for (x, want) in [
        (0.25, 0.0),
        (0.75, 1.0),
        (1.25, 1.0),
        (1.75, 2.0),
        (2.5, 2.0),
        (3.5, 4.0),
        (5.0, 4.0),
        (-5.0, -4.0),
        (-2.5, -2.0),
    ] {
        assert_eq!(round_to::<F4E2M1>(x), want, "e2m1 {x}");
    }
    assert_eq!(round_to::<F4E2M1>(next_up(0.25)), 0.5);
    assert_eq!(round_to::<F4E2M1>(next_up(5.0)), 6.0);
    // e5m2 tie in the normal range: 1.125 between 1.0 (00) and 1.25 (01).
    assert_eq!(round_to::<F8E5M2>(1.125), 1.0);
    assert_eq!(round_to::<F8E5M2>(1.375), 1.5);
    // Ties that carry into the next binade: e3m2 3.75 between 3.5 (11) and 4.0 (00).
    assert_eq!(round_to::<F6E3M2>(3.75), 4.0);
    assert_eq!(round_to::<F6E2M3>(3.875), 4.0);
    assert_eq!(round_to::<F6E2M3>(3.625), 3.5);
}

#[test]
fn subnormals_are_exact() {
    let cases: [(f32, f32); 6] = [
        (F8E4M3::from_bits(1).to_f32(), p2(-9)),
        (F8E4M3Fnuz::from_bits(1).to_f32(), p2(-10)),
        (F8E5M2::from_bits(1).to_f32(), p2(-16)),
        (F6E3M2::from_bits(1).to_f32(), 0.0625),
        (F6E2M3::from_bits(1).to_f32(), 0.125),
        (F4E2M1::from_bits(1).to_f32(), 0.5),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    assert_eq!(bits::<F8E4M3>(p2(-9)), 0x01);
    assert_eq!(bits::<F8E4M3>(3.0 * p2(-9)), 0x03);
    assert_eq!(bits::<F8E4M3>(7.0 * p2(-9)), 0x07);
    assert_eq!(bits::<F8E4M3>(p2(-6)), 0x08); // smallest normal
    assert_eq!(bits::<F8E4M3>(next_down(p2(-6))), 0x08);
    // Half the smallest subnormal is a tie with zero: goes to 0; just above it, to 1.
    assert_eq!(bits::<F8E4M3>(p2(-10)), 0x00);
    assert_eq!(bits::<F8E4M3>(next_up(p2(-10))), 0x01);
    assert_eq!(bits::<F8E4M3>(1.5 * p2(-9)), 0x02);
    assert_eq!(bits::<F8E4M3Fnuz>(p2(-10)), 0x01);
    assert_eq!(bits::<F8E5M2>(p2(-16)), 0x01);
    assert_eq!(bits::<F8E5M2>(p2(-17)), 0x00);
    assert_eq!(bits::<F6E3M2>(0.0625), 0x01);
    assert_eq!(bits::<F6E2M3>(0.125), 0x01);
    assert_eq!(bits::<F4E2M1>(0.5), 0x01);
    // f32 subnormal inputs are far below every format and go to zero.
    assert_eq!(bits::<F8E5M2>(f32::from_bits(1)), 0x00);
}

#[test]
fn signed_zero_rules() {
    for x in [-0.0f32, -1e-30, -f32::from_bits(1)] {
        assert_eq!(bits::<F8E4M3>(x), 0x80, "{x}");
        assert_eq!(bits::<F8E5M2>(x), 0x80, "{x}");
        assert_eq!(bits::<F8E4M3Fnuz>(x), 0x00, "{x}");
        assert_eq!(bits::<F6E3M2>(x), 0x20, "{x}");
        assert_eq!(bits::<F6E2M3>(x), 0x20, "{x}");
        assert_eq!(bits::<F4E2M1>(x), 0x08, "{x}");
    }
    assert_eq!(bits::<F8E4M3Fnuz>(-p2(-11)), 0x00);
    assert_eq!(bits::<F8E4M3>(0.0), 0x00);
}

#[test]
fn saturation() {
    for x in [449.0f32, 464.0, 480.0, 1e9, f32::MAX, f32::INFINITY] {
        assert_eq!(bits::<F8E4M3>(x), 0x7E, "{x}");
        assert_eq!(bits::<F8E4M3>(-x), 0xFE, "{x}");
    }
    for x in [241.0f32, 248.0, 1e9, f32::INFINITY] {
        assert_eq!(bits::<F8E4M3Fnuz>(x), 0x7F, "{x}");
        assert_eq!(bits::<F8E4M3Fnuz>(-x), 0xFF, "{x}");
    }
    // 61440 is the tie between 57344 and where inf sits; both it and inf saturate.
    for x in [57345.0f32, 61440.0, 65536.0, 1e30, f32::INFINITY] {
        assert_eq!(bits::<F8E5M2>(x), 0x7B, "{x}");
        assert_eq!(bits::<F8E5M2>(-x), 0xFB, "{x}");
    }
    for x in [29.0f32, 30.0, 1e6, f32::INFINITY] {
        assert_eq!(bits::<F6E3M2>(x), 0x1F, "{x}");
    }
    for x in [7.75f32, 8.0, f32::INFINITY] {
        assert_eq!(bits::<F6E2M3>(x), 0x1F, "{x}");
    }
    for x in [6.5f32, 7.0, 8.0, 100.0, f32::INFINITY] {
        assert_eq!(bits::<F4E2M1>(x), 0x07, "{x}");
        assert_eq!(bits::<F4E2M1>(-x), 0x0F, "{x}");
    }
}

#[test]
fn nan_inputs() {
    for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001)] {
        assert_eq!(bits::<F8E4M3>(nan), 0x7F);
        assert_eq!(bits::<F8E4M3Fnuz>(nan), 0x80);
        assert_eq!(bits::<F8E5M2>(nan), 0x7F);
        assert_eq!(bits::<F6E3M2>(nan), 0x00);
        assert_eq!(bits::<F6E2M3>(nan), 0x00);
        assert_eq!(bits::<F4E2M1>(nan), 0x00);
        assert_eq!(bits::<E8M0>(nan), 0xFF);
    }
    assert!(round_to::<F8E4M3>(f32::NAN).is_nan());
    assert_eq!(round_to::<F4E2M1>(f32::NAN), 0.0);
    for c in [0x7Du8, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF] {
        assert!(F8E5M2(c).is_nan() && F8E5M2(c).to_f32().is_nan());
    }
    assert!(!F8E5M2(0x7C).is_nan());
}

/// vLLM's MI300 path reinterprets e4m3fn bytes as e4m3fnuz and doubles the scales; that
/// is only right if every such byte reads as exactly half.
#[test]
fn fnuz_reads_fn_bytes_as_half() {
    for c in 0..=255u8 {
        let fn_value = F8E4M3::from_bits(c).to_f32();
        if fn_value.is_nan() || c == 0x80 {
            continue;
        }
        assert_eq!(
            F8E4M3Fnuz::from_bits(c).to_f32(),
            fn_value / 2.0,
            "{c:#04x}"
        );
    }
}

/// E8M0 reference: nearest power of two by absolute difference, midpoint up.
fn e8m0_reference(x: f32) -> u8 {
    if x.is_nan() || x < 0.0 {
        return 0xFF;
    }
    if x == 0.0 {
        return 0;
    }
    if x.is_infinite() {
        return 254;
    }
    let a = f64::from(x);
    let mut best = 0u8;
    let mut best_d = f64::INFINITY;
    for c in 0..=254u8 {
        let d = (2f64.powi(i32::from(c) - 127) - a).abs();
        if d <= best_d {
            best = c;
            best_d = d;
        }
    }
    best
}

#[test]
fn e8m0_decode_and_round_trip() {
    for c in 0..=254u8 {
        let v = E8M0(c).to_f32();
        assert_eq!(f64::from(v), 2f64.powi(i32::from(c) - 127), "{c}");
        assert_eq!(E8M0::from_f32(v), E8M0(c));
        assert_eq!(E8M0(c).exponent(), Some(i32::from(c) - 127));
        assert_eq!(E8M0::from_exponent(i32::from(c) - 127), E8M0(c));
    }
    assert_eq!(E8M0(0xFF).exponent(), None);
    assert_eq!(E8M0::from_exponent(-500), E8M0(0));
    assert_eq!(E8M0::from_exponent(500), E8M0(254));
    assert_eq!(E8M0::ONE.to_f32(), 1.0);
    assert!(E8M0::NAN.is_nan());
}

#[test]
fn e8m0_rounding() {
    let code = |x: f32| E8M0::from_f32(x).0;
    assert_eq!(code(1.0), 127);
    assert_eq!(code(1.5), 128); // midpoint rounds up
    assert_eq!(code(next_down(1.5)), 127);
    assert_eq!(code(0.75), 127);
    assert_eq!(code(3.0), 129);
    assert_eq!(code(next_down(2.0)), 128);
    // Bottom of the range, which lies among f32 subnormals.
    assert_eq!(code(p2(-127)), 0);
    assert_eq!(code(1.25 * p2(-127)), 0);
    assert_eq!(code(1.5 * p2(-127)), 1);
    assert_eq!(code(p2(-140)), 0);
    assert_eq!(code(0.0), 0);
    assert_eq!(code(-0.0), 0);
    // Top of the range saturates.
    assert_eq!(code(1.5 * p2(127)), 254);
    assert_eq!(code(f32::MAX), 254);
    assert_eq!(code(f32::INFINITY), 254);
    // Negative scales are invalid: NaN.
    assert_eq!(code(-1.0), 0xFF);
    assert_eq!(code(f32::NEG_INFINITY), 0xFF);
    assert_eq!(code(f32::NAN), 0xFF);
}

#[test]
fn e8m0_matches_brute_force() {
    let mut xs = vec![0.0f32, -0.0, f32::INFINITY, f32::NAN, f32::MAX, -2.0];
    for e in -149..=127 {
        let p = p2(e);
        xs.push(p);
        if e >= -126 {
            for m in [1.25f32, 1.5, 1.75] {
                let x = p * m;
                xs.extend([x, next_up(x), next_down(x)]);
            }
        }
        xs.push(next_up(p));
        xs.push(next_down(p));
    }
    for k in 1..64u32 {
        xs.push(f32::from_bits(k << 17)); // subnormal inputs around 2^-127
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..2000 {
        xs.push(f32::from_bits(rng.random::<u32>()));
    }
    for x in xs {
        assert_eq!(
            E8M0::from_f32(x).0,
            e8m0_reference(x),
            "{x:e} ({:#010x})",
            x.to_bits()
        );
    }
}

fn assert_shape_err<T: std::fmt::Debug>(r: fleetmoe::Result<T>) {
    match r {
        Err(Error::Shape { .. }) => {}
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn fp4_packing() {
    assert_eq!(pack_fp4(&[0x1, 0x2, 0x3, 0x4]).unwrap(), [0x21, 0x43]);
    assert_eq!(unpack_fp4(&[0x21, 0x43]), [0x1, 0x2, 0x3, 0x4]);
    assert_eq!(unpack_fp4(&[0xF0]), [0x0, 0xF]);
    assert_shape_err(pack_fp4(&[1, 2, 3]));
    assert_shape_err(pack_fp4(&[1, 16]));
    assert_eq!(pack_fp4(&[]).unwrap(), Vec::<u8>::new());
}

#[test]
fn fp6_packing() {
    // c0..c3 = 0x01, 0x02, 0x03, 0x3F in a 24-bit little-endian word.
    assert_eq!(pack_fp6(&[1, 2, 3, 63]).unwrap(), [0x81, 0x30, 0xFC]);
    // Each code alone, to pin its bit positions.
    assert_eq!(pack_fp6(&[0x3F, 0, 0, 0]).unwrap(), [0x3F, 0x00, 0x00]);
    assert_eq!(pack_fp6(&[0, 0x3F, 0, 0]).unwrap(), [0xC0, 0x0F, 0x00]);
    assert_eq!(pack_fp6(&[0, 0, 0x3F, 0]).unwrap(), [0x00, 0xF0, 0x03]);
    assert_eq!(pack_fp6(&[0, 0, 0, 0x3F]).unwrap(), [0x00, 0x00, 0xFC]);
    assert_shape_err(pack_fp6(&[1, 2, 3]));
    assert_shape_err(pack_fp6(&[1, 2, 3, 64]));
    assert_shape_err(unpack_fp6(&[1, 2, 3, 4]));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let codes: Vec<u8> = (0..4 * 257).map(|_| rng.random_range(0..64)).collect();
    let packed = pack_fp6(&codes).unwrap();
    assert_eq!(packed.len(), codes.len() / 4 * 3);
    assert_eq!(unpack_fp6(&packed).unwrap(), codes);
    let bytes: Vec<u8> = (0..300).map(|_| rng.random()).collect();
    assert_eq!(pack_fp6(&unpack_fp6(&bytes).unwrap()).unwrap(), bytes);
}

#[test]
fn int4_packing() {
    let words = pack_int4_i32(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    assert_eq!(words, [0x7654_3210]);
    assert_eq!(pack_int4_i32(&[0xF; 8]).unwrap(), [-1]);
    assert_eq!(
        pack_int4_i32(&[0, 0, 0, 0, 0, 0, 0, 0x8]).unwrap(),
        [i32::MIN]
    );
    assert_eq!(unpack_int4_i32(&[0x7654_3210]), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(unpack_int4_i32(&[i32::MIN]), [0, 0, 0, 0, 0, 0, 0, 8]);
    assert_shape_err(pack_int4_i32(&[0; 7]));
    assert_shape_err(pack_int4_i32(&[0, 0, 0, 16, 0, 0, 0, 0]));

    assert_eq!(pack_int4_u8(&[0x1, 0x2, 0xF, 0x0]).unwrap(), [0x21, 0x0F]);
    assert_eq!(unpack_int4_u8(&[0x21, 0x0F]), [0x1, 0x2, 0xF, 0x0]);
    assert_shape_err(pack_int4_u8(&[1]));
    assert_shape_err(pack_int4_u8(&[1, 200]));

    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let values: Vec<u8> = (0..8 * 100).map(|_| rng.random_range(0..16)).collect();
    assert_eq!(unpack_int4_i32(&pack_int4_i32(&values).unwrap()), values);
    assert_eq!(unpack_int4_u8(&pack_int4_u8(&values).unwrap()), values);

    for v in -8i8..=7 {
        assert_eq!(int4_signed(int4_from_signed(v)), v);
    }
    assert_eq!(int4_signed(0x8), -8);
    assert_eq!(int4_signed(0xF), -1);
    assert_eq!(int4_signed(0x7), 7);
    assert_eq!(int4_from_signed(-1), 0xF);
    assert_eq!(int4_from_signed(-8), 0x8);
}

#[test]
fn decode_table_path_matches_scalar() {
    // `decode` switches to a lookup table for long slices.
    let codes: Vec<u8> = (0..1024u32).map(|i| (i * 37 % 256) as u8).collect();
    let long = decode::<F8E4M3>(&codes);
    for (&c, &v) in codes.iter().zip(&long) {
        let want = F8E4M3::from_bits(c).to_f32();
        assert!(v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()));
    }
    let long = decode::<F4E2M1>(&codes);
    for (&c, &v) in codes.iter().zip(&long) {
        assert_eq!(v.to_bits(), F4E2M1::from_bits(c).to_f32().to_bits());
    }
}
