//! What the validation tests share: a small layer, its weights, and assertions that an
//! error is the expected variant naming the expected field and value.
#![allow(dead_code)]

use fleetmoe::moe::*;
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
use fleetmoe::Error;

pub const E: usize = 4;
pub const H: usize = 128;
pub const I: usize = 128;

pub fn config() -> LayerConfig {
    LayerConfig::new(E, 2, H, I)
}

pub fn weights(config: &LayerConfig, scheme: &str) -> ExpertWeights {
    ExpertWeights::quantize(
        &DenseExperts::random(config, 7),
        QuantScheme::parse(scheme).unwrap(),
    )
    .unwrap()
}

pub fn layer(
    config: LayerConfig,
    w: &ExpertWeights,
    extras: LayerExtras,
) -> fleetmoe::Result<MoeLayer> {
    MoeLayer::new(config, w, &Target::cpu(), extras)
}

/// The error of `r`, which must be one.
#[track_caller]
pub fn error<T>(r: fleetmoe::Result<T>, wanted: &str) -> Error {
    match r {
        Ok(_) => panic!("expected {wanted}, got Ok"),
        Err(e) => e,
    }
}

/// Asserts an `Error::Value` whose field contains `what` and whose value is `value`
/// (NaN matches NaN), with both in the message; returns the message.
#[track_caller]
pub fn assert_value<T>(r: fleetmoe::Result<T>, what: &str, value: f32) -> String {
    let e = error(r, &format!("Error::Value for {what} = {value}"));
    let m = e.to_string();
    match e {
        Error::Value {
            what: w, value: v, ..
        } => {
            assert!(w.contains(what), "field '{w}' does not name '{what}'");
            assert!(
                v == value || (v.is_nan() && value.is_nan()),
                "value {v}, expected {value}"
            );
            assert!(m.contains(what) && m.contains(&format!("{value}")), "{m}");
            m
        }
        other => panic!("expected Error::Value for {what} = {value}, got {other:?}"),
    }
}

/// Asserts an `Error::Scale` naming `what`, with `value` and reason `why`.
#[track_caller]
pub fn assert_scale<T>(r: fleetmoe::Result<T>, what: &str, value: f32, why: &str) {
    match error(r, &format!("Error::Scale for {what} = {value}")) {
        Error::Scale {
            what: w,
            value: v,
            why: y,
        } => {
            assert!(w.contains(what), "field '{w}' does not name '{what}'");
            assert!(
                v == value || (v.is_nan() && value.is_nan()),
                "value {v}, expected {value}"
            );
            assert!(y.contains(why), "reason '{y}', expected '{why}'");
        }
        other => panic!("expected Error::Scale for {what} = {value} ({why}), got {other:?}"),
    }
}

/// Asserts an `Error::Overflow` naming `what`.
#[track_caller]
pub fn assert_overflow<T>(r: fleetmoe::Result<T>, what: &str) {
    match error(r, &format!("Error::Overflow for {what}")) {
        e @ Error::Overflow { .. } => {
            let m = e.to_string();
            assert!(m.contains(what) && m.contains("does not fit"), "{m}");
        }
        other => panic!("expected Error::Overflow for {what}, got {other:?}"),
    }
}

/// Asserts an `Error::Config` whose message contains every one of `parts`.
#[track_caller]
pub fn assert_config<T>(r: fleetmoe::Result<T>, parts: &[&str]) {
    match error(r, &format!("Error::Config saying {parts:?}")) {
        Error::Config(m) => {
            for p in parts {
                assert!(m.contains(p), "'{m}' does not say '{p}'");
            }
        }
        other => panic!("expected Error::Config saying {parts:?}, got {other:?}"),
    }
}
