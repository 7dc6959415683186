//! AMD GPU architecture names as the HIP runtime reports them (`gcnArchName`, e.g.
//! `gfx942:sramecc+:xnack-`) and what fleetmoe derives from them. Pure parsing, always
//! built, so it is tested on machines without an AMD GPU.

use crate::error::{Error, Result};
use crate::quant::Fp8Flavor;

/// A parsed `gcnArchName`: the processor (`gfx942`) and its target features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GfxArch {
    /// The processor, the name code objects are built for (`gfx90a`, `gfx942`, `gfx950`).
    pub processor: String,
    /// Target features with their setting, in the order given (`("sramecc", true)`).
    pub features: Vec<(String, bool)>,
}

impl GfxArch {
    /// Parses `gfxNNN[:feature(+|-)]*`; anything else is an `Error::Device` naming the
    /// string, since it came from the runtime.
    pub fn parse(name: &str) -> Result<GfxArch> {
        let bad = |why: &str| Error::Device {
            call: "gcnArchName".into(),
            message: format!("'{name}' is not an AMD architecture name: {why}"),
        };
        let mut parts = name.trim().split(':');
        let processor = parts.next().unwrap_or_default();
        let digits = processor
            .strip_prefix("gfx")
            .ok_or_else(|| bad("no gfx prefix"))?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the processor is not gfx followed by hex digits"));
        }
        let features = parts
            .map(|f| match f.as_bytes().last() {
                Some(b'+') => Ok((f[..f.len() - 1].to_string(), true)),
                Some(b'-') => Ok((f[..f.len() - 1].to_string(), false)),
                _ => Err(bad("a target feature without + or -")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GfxArch {
            processor: processor.to_ascii_lowercase(),
            features,
        })
    }

    /// The e4m3 flavour the matrix cores take: e4m3fnuz on gfx942 (MI300), OCP e4m3fn on
    /// gfx950 (MI350); no fp8 matrix instructions elsewhere (gfx90a).
    pub fn fp8(&self) -> Option<Fp8Flavor> {
        match self.processor.as_str() {
            "gfx940" | "gfx941" | "gfx942" => Some(Fp8Flavor::E4M3Fnuz),
            "gfx950" => Some(Fp8Flavor::E4M3Fn),
            _ => None,
        }
    }

    /// Native OCP MX block-scaled matrix instructions (`v_mfma_scale_f32_*_f8f6f4`).
    pub fn supports_mx(&self) -> bool {
        self.processor == "gfx950"
    }

    /// bf16 MFMA (CDNA: gfx908 onwards).
    pub fn bf16_matrix(&self) -> bool {
        matches!(
            self.processor.as_str(),
            "gfx908" | "gfx90a" | "gfx940" | "gfx941" | "gfx942" | "gfx950"
        )
    }
}

/// Finds the first NUL-terminated `gfx…` string in `bytes`. The HIP runtime writes
/// `gcnArchName` into `hipDeviceProp_t`, whose layout changed between ROCm 5 and 6; the
/// only field that starts with "gfx" is that one, so scanning for it needs no layout.
pub fn find_arch_name(bytes: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if &bytes[i..i + 3] == b"gfx" {
            let end = bytes[i..].iter().position(|&b| b == 0)? + i;
            let s = std::str::from_utf8(&bytes[i..end]).ok()?;
            if GfxArch::parse(s).is_ok() {
                return Some(s.to_string());
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_runtime_names() {
        let a = GfxArch::parse("gfx942:sramecc+:xnack-").unwrap();
        assert_eq!(a.processor, "gfx942");
        assert_eq!(
            a.features,
            vec![("sramecc".to_string(), true), ("xnack".to_string(), false)]
        );
        assert_eq!(a.fp8(), Some(Fp8Flavor::E4M3Fnuz));
        assert!(!a.supports_mx());
        let b = GfxArch::parse("gfx950").unwrap();
        assert_eq!((b.fp8(), b.supports_mx()), (Some(Fp8Flavor::E4M3Fn), true));
        let c = GfxArch::parse("gfx90a:sramecc+:xnack+").unwrap();
        assert_eq!(
            (c.fp8(), c.supports_mx(), c.bf16_matrix()),
            (None, false, true)
        );
        assert!(!GfxArch::parse("gfx1100").unwrap().bf16_matrix());
    }

    #[test]
    fn rejects_what_is_not_an_arch() {
        for s in [
            "",
            "sm_90a",
            "gfx",
            "gfx94z",
            "gfx942:sramecc",
            "gfx942:xnack?",
        ] {
            assert!(GfxArch::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn finds_the_name_in_a_property_blob() {
        let mut blob = vec![0u8; 1500];
        blob[..20].copy_from_slice(b"AMD Instinct MI300X\0");
        blob[396..396 + 22].copy_from_slice(b"gfx942:sramecc+:xnack-");
        assert_eq!(
            find_arch_name(&blob).as_deref(),
            Some("gfx942:sramecc+:xnack-")
        );
        // A "gfx" that does not start a whole architecture name is not taken.
        let mut other = vec![0u8; 64];
        other[..9].copy_from_slice(b"xgfx942y\0");
        assert_eq!(find_arch_name(&other), None);
        assert_eq!(find_arch_name(&[0u8; 64]), None);
    }
}
