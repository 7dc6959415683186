//! The README's schemes × platforms table says what the oracle says: each cell is
//! recomputed from `select` on the preset platforms, so the table cannot drift from the code.

use fleetmoe::device::Capabilities;
use fleetmoe::moe::LayerConfig;
use fleetmoe::oracle::{select, Conversion, Unmet};
use fleetmoe::quant::QuantScheme;

/// The schemes each table row stands for; every one of them must get the row's cells.
fn row_schemes(row: &str) -> &'static [&'static str] {
    match row {
        "bf16 / f16" => &["bf16", "f16"],
        "fp8 per-tensor / per-channel" => &["fp8", "fp8-channel", "fp8-static"],
        "fp8 block 128" => &["fp8-block128"],
        "nvfp4 weight-only" => &["nvfp4-a16"],
        "nvfp4 W4A4" => &["nvfp4"],
        "mxfp4, bf16 activations" => &["mxfp4"],
        "mxfp4, fp8 activations" => &["mxfp4-a-fp8"],
        "mxfp4 / mxfp6, MX activations" => &["mxfp4-a-mxfp4", "mxfp6-e3m2", "mxfp6-e2m3"],
        "mxfp6, fp8 activations" => &["mxfp6-e2m3-a-fp8", "mxfp6-e3m2-a-fp8"],
        "mxfp6, bf16 activations" => &["mxfp6-e2m3-a-bf16", "mxfp6-e3m2-a-bf16"],
        "int4 / int8 weight-only (GPTQ, AWQ)" => {
            &["w4a16", "w4a16-g32-zp", "w8a16-channel", "w8a16-g128-zp"]
        }
        "int4 weight-only with act-order (GPTQ g_idx)" => &["w4a16-g128-actorder"],
        "w4a8" => &["w4a8"],
        "int8 w8a8" => &["w8a8-int8"],
        other => panic!("README row '{other}' has no schemes in tests/readme.rs"),
    }
}

fn column_platform(header: &str) -> &'static str {
    match header.split_whitespace().next().unwrap() {
        "CPU" => "cpu",
        "H100" => "h100",
        "B200" => "b200",
        "MI250X" => "mi250x",
        "MI300X" => "mi300x",
        "MI355X" => "mi355x",
        other => panic!("README column '{other}' has no preset"),
    }
}

/// What the cell should say: the backend that runs, or the first one only missing from
/// this build, or emulation.
fn cell(scheme: &str, platform: &str) -> String {
    let scheme = QuantScheme::parse(scheme).unwrap();
    let caps = Capabilities::preset(platform).unwrap();
    let sel = select(&scheme, &caps, &LayerConfig::new(8, 2, 4096, 14336), None).unwrap();
    let fnuz = |c: &[Conversion]| {
        if c.contains(&Conversion::Fp8FnToFnuz) {
            " (fn→fnuz)"
        } else {
            ""
        }
    };
    if sel.chosen != fleetmoe::oracle::BackendId::Emulation {
        return format!("native: {}{}", sel.chosen, fnuz(&sel.conversions));
    }
    // The first backend that only lacks availability: native once its feature is on, or
    // declared but not written yet.
    let waiting = sel
        .rejected
        .iter()
        .find(|r| r.unmet.iter().all(|u| u.is_availability()));
    match waiting {
        Some(r) if r.unmet.iter().all(|u| matches!(u, Unmet::NotBuilt { .. })) => {
            format!("native: {}{}", r.backend, fnuz(&r.conversions))
        }
        Some(r) => format!("planned: {}{}", r.backend, fnuz(&r.conversions)),
        None => "emulated".to_string(),
    }
}

#[test]
fn schemes_by_platform_table_matches_the_oracle() {
    let readme = include_str!("../README.md");
    let table: Vec<Vec<&str>> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| scheme | CPU"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert!(
        table.len() > 3,
        "the README has no schemes × platforms table"
    );
    let platforms: Vec<&str> = table[0][1..].iter().map(|h| column_platform(h)).collect();
    let mut wrong = Vec::new();
    for row in &table[2..] {
        for scheme in row_schemes(row[0]) {
            for (platform, written) in platforms.iter().zip(&row[1..]) {
                let want = cell(scheme, platform);
                // "emulated (why)" is the README explaining an emulated cell; the
                // oracle's word is still just "emulated".
                let said = match written.split_once(" (") {
                    Some(("emulated", _)) => "emulated",
                    _ => written,
                };
                if said != want {
                    wrong.push(format!(
                        "{scheme} on {platform}: README says '{written}', the oracle says '{want}'"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README table is out of date:\n{}",
        wrong.join("\n")
    );
}
