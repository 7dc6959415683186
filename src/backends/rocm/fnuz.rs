//! fnuz normalisation of OCP e4m3fn checkpoints for gfx942 (MI300), whose MFMA reads fp8
//! as e4m3fnuz.
//!
//! The rule, checked over all 256 codes against `formats::{F8E4M3, F8E4M3Fnuz}` in the
//! tests below: e4m3fnuz has the same bit layout as e4m3fn with one more unit of bias, so
//! every byte that is finite in both reads as exactly half its e4m3fn value. Hence:
//! bytes are kept, byte 0x80 (−0 in fn, the only NaN in fnuz) becomes 0x00, and every
//! weight scale and static input scale is doubled; `code · scale` is then bit-for-bit the
//! same value. The e4m3fn NaN codes 0x7F and 0xFF read as ±240 in fnuz, so a weight
//! holding them cannot be normalised and is refused rather than silently made finite.
//! The inverse halves the scales and keeps the bytes (0x00 stays +0, so −0 is not
//! restored; the values are equal).

use crate::error::{check_scale, Error, Result};

/// Rewrites e4m3fn weight codes in place as e4m3fnuz and doubles their scales.
pub fn fn_to_fnuz(codes: &mut [u8], scales: &mut [f32]) -> Result<()> {
    if let Some(i) = codes.iter().position(|&c| c & 0x7F == 0x7F) {
        return Err(Error::Scale {
            what: format!("fp8 e4m3fn weight code 0x{:02X} at index {i}", codes[i]),
            value: f32::NAN,
            why: "NaN code has no e4m3fnuz equivalent",
        });
    }
    for s in scales.iter() {
        check_scale("fp8 weight scale", *s)?;
    }
    for c in codes.iter_mut() {
        if *c == 0x80 {
            *c = 0x00;
        }
    }
    for s in scales.iter_mut() {
        *s = double_scale(*s)?;
    }
    Ok(())
}

/// Doubles a static input scale for e4m3fnuz activations (same rule as the weights).
pub fn fn_to_fnuz_input_scale(scale: f32) -> Result<f32> {
    check_scale("fp8 static input scale", scale)?;
    double_scale(scale)
}

/// The inverse of [`fn_to_fnuz`]: bytes kept, scales halved. Refuses 0x80 (NaN in
/// e4m3fnuz) and ±240 (0x7F / 0xFF), which read as NaN in e4m3fn and would need
/// requantizing.
pub fn fnuz_to_fn(codes: &mut [u8], scales: &mut [f32]) -> Result<()> {
    if let Some(i) = codes.iter().position(|&c| c == 0x80 || c & 0x7F == 0x7F) {
        return Err(Error::Scale {
            what: format!("fp8 e4m3fnuz weight code 0x{:02X} at index {i}", codes[i]),
            value: f32::NAN,
            why: "0x80 is NaN in e4m3fnuz and ±240 (0x7F, 0xFF) is NaN in e4m3fn",
        });
    }
    for s in scales.iter() {
        check_scale("fp8 weight scale", *s)?;
    }
    for s in scales.iter_mut() {
        *s *= 0.5;
    }
    Ok(())
}

fn double_scale(s: f32) -> Result<f32> {
    let d = s * 2.0;
    if d.is_finite() {
        Ok(d)
    } else {
        Err(Error::Scale {
            what: "fp8 scale doubled for e4m3fnuz".into(),
            value: s,
            why: "overflows f32 when doubled",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{F8E4M3Fnuz, MiniFloat, F8E4M3};

    #[test]
    fn every_finite_fn_code_is_twice_its_fnuz_reading() {
        for code in 0..=255u8 {
            let v_fn = F8E4M3::from_bits(code).to_f32();
            let mut codes = [code];
            let mut scales = [1.0f32];
            let r = fn_to_fnuz(&mut codes, &mut scales);
            if v_fn.is_nan() {
                assert!(r.is_err(), "NaN code 0x{code:02X} accepted");
                continue;
            }
            r.unwrap();
            let v_fnuz = F8E4M3Fnuz::from_bits(codes[0]).to_f32();
            assert!(!v_fnuz.is_nan(), "0x{code:02X} became NaN");
            assert_eq!(
                (v_fnuz * scales[0]).to_bits() & 0x7FFF_FFFF,
                v_fn.to_bits() & 0x7FFF_FFFF
            );
            if v_fn != 0.0 {
                assert_eq!(v_fnuz * scales[0], v_fn, "code 0x{code:02X}");
                assert_eq!(codes[0], code);
            } else {
                assert_eq!(codes[0], 0x00);
            }
        }
    }

    #[test]
    fn inverse_restores_scales_and_bytes() {
        let orig: Vec<u8> = (0..=255u8)
            .filter(|c| c & 0x7F != 0x7F && *c != 0x80)
            .collect();
        let mut codes = orig.clone();
        let mut scales = vec![0.37f32, 1e-3];
        fn_to_fnuz(&mut codes, &mut scales).unwrap();
        fnuz_to_fn(&mut codes, &mut scales).unwrap();
        assert_eq!(codes, orig);
        assert_eq!(scales, vec![0.37f32, 1e-3]);
    }

    #[test]
    fn bad_scales_are_errors() {
        assert!(fn_to_fnuz(&mut [1], &mut [f32::NAN]).is_err());
        assert!(fn_to_fnuz(&mut [1], &mut [f32::MAX]).is_err());
        assert!(fnuz_to_fn(&mut [0x80], &mut [1.0]).is_err());
        assert!(fnuz_to_fn(&mut [0x7F], &mut [1.0]).is_err());
        assert!(fnuz_to_fn(&mut [0xFF], &mut [1.0]).is_err());
        assert_eq!(fn_to_fnuz_input_scale(0.25).unwrap(), 0.5);
    }
}
