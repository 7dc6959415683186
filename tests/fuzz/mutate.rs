//! Mutators for model directories, deterministic from the rng: tensor values aimed at
//! meaning (NaN / ±inf / 0 / huge / tiny floats, fp8 NaN codes, e8m0 0xFF and large
//! exponents, odd integers), bit flips, header edits (shape, dtype, offsets, names,
//! duplicates), raw file edits (truncation, header length), JSON edits (drop a key,
//! change a type, edge numbers, unknown strings, another architecture) and shard edits.

use super::files::{Model, RawEdit, Role, StFile, Tensor};
use super::jsonmut::mutate_json;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// A mutated model, the log of what was done, and (when the mutation made the input
/// invalid in a way the loader must notice) what must be refused.
pub struct Mutant {
    pub model: Model,
    pub log: Vec<String>,
    pub refuse: Option<String>,
    /// The model tensor the claim is about, when it is one: the claim holds only if the
    /// loader read it (a tensor no layer reads may hold anything).
    pub refuse_tensor: Option<String>,
}

pub fn mutate(seed: &Model, r: &mut ChaCha8Rng) -> Mutant {
    let mut m = seed.clone();
    let mut log = Vec::new();
    let n = 1 + usize::from(r.random_bool(0.15)) + usize::from(r.random_bool(0.05));
    for _ in 0..n {
        let what = match r.random_range(0..100) {
            0..30 => value(&mut m, r),
            30..36 => flip_bits(&mut m, r),
            36..48 => shape(&mut m, r),
            48..54 => dtype(&mut m, r),
            54..58 => offsets(&mut m, r),
            58..66 => names(&mut m, r),
            66..72 => raw(&mut m, r),
            72..94 => {
                let k = pick_json(&m, r);
                let (path, v) = &mut m.jsons[k];
                let d = mutate_json(v, path == "config.json", r);
                if r.random_bool(0.05) {
                    let mut text = v.to_string().into_bytes();
                    text.truncate(r.random_range(0..=text.len()));
                    m.raw_json.push((path.clone(), text));
                    format!("json {path}: {d}, then truncated")
                } else {
                    format!("json {path}: {d}")
                }
            }
            _ => shards(&mut m, r),
        };
        log.push(what);
    }
    let (refuse, refuse_tensor) = match invalid(&m) {
        Some((why, tensor)) => (Some(why), tensor),
        None => (None, None),
    };
    Mutant {
        model: m,
        log,
        refuse,
        refuse_tensor,
    }
}

fn pick_json(m: &Model, r: &mut ChaCha8Rng) -> usize {
    if r.random_bool(0.6) {
        0
    } else {
        r.random_range(0..m.jsons.len())
    }
}

/// A tensor, most often one of the block under test or the adapter.
fn pick(m: &Model, r: &mut ChaCha8Rng) -> Option<(usize, usize)> {
    let all: Vec<(usize, usize)> = m
        .files
        .iter()
        .enumerate()
        .flat_map(|(f, file)| (0..file.tensors.len()).map(move |t| (f, t)))
        .collect();
    let aimed: Vec<(usize, usize)> = all
        .iter()
        .copied()
        .filter(|&(f, t)| reads(m, &m.files[f].tensors[t].name))
        .collect();
    let from = if !aimed.is_empty() && r.random_bool(0.9) {
        aimed
    } else {
        all
    };
    (!from.is_empty()).then(|| from[r.random_range(0..from.len())])
}

/// Whether the loader reads `name` for the layer under test (or its adapter).
fn reads(m: &Model, name: &str) -> bool {
    name.starts_with(&format!("{}.", m.block))
        || name.starts_with(&format!("base_model.model.{}.", m.block))
}

fn float_bytes(dtype: &str, x: f32) -> Vec<u8> {
    match dtype {
        "BF16" => half::bf16::from_f32(x).to_le_bytes().to_vec(),
        "F16" => half::f16::from_f32(x).to_le_bytes().to_vec(),
        _ => x.to_le_bytes().to_vec(),
    }
}

fn value(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let Some((f, t)) = pick(m, r) else {
        return "value: no tensor".into();
    };
    let t = &mut m.files[f].tensors[t];
    let width = match (t.role, t.dtype.as_str()) {
        (Role::Float, d) => Tensor::elem_bytes(d),
        (Role::Int, _) => 4,
        _ => 1,
    };
    let count = t.data.len() / width;
    if count == 0 {
        return format!("value {}: empty", t.name);
    }
    let bytes: (String, Vec<u8>) = match t.role {
        Role::Float => {
            const V: [f32; 14] = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                -1.0,
                -0.01,
                1e30,
                f32::MAX,
                65504.0,
                -65504.0,
                1e-30,
                1e-45,
                1e6,
            ];
            let x = V[r.random_range(0..V.len())];
            let b = float_bytes(&t.dtype, x);
            let stored = match t.dtype.as_str() {
                "BF16" => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                "F16" => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => x,
            };
            (format!("{stored:e}"), b)
        }
        Role::Fp8 => {
            const C: [u8; 9] = [0x7F, 0xFF, 0x7E, 0xFE, 0x00, 0x80, 0x01, 0x78, 0xF8];
            let c = if r.random_bool(0.1) {
                r.random()
            } else {
                C[r.random_range(0..C.len())]
            };
            (format!("e4m3 {c:#04x}"), vec![c])
        }
        Role::E8m0 => {
            const C: [u8; 7] = [0xFF, 0xFE, 0xF0, 0xC0, 0x00, 0x01, 0x80];
            let c = if r.random_bool(0.1) {
                r.random()
            } else {
                C[r.random_range(0..C.len())]
            };
            (format!("e8m0 {c:#04x}"), vec![c])
        }
        Role::Packed => {
            let c: u8 = if r.random_bool(0.5) { r.random() } else { 0xFF };
            (format!("byte {c:#04x}"), vec![c])
        }
        Role::Int => {
            const W: [i32; 10] = [-1, i32::MIN, i32::MAX, 0, 1, 64, 1000, 1 << 20, -5, 33];
            let w = if r.random_bool(0.2) {
                r.random()
            } else {
                W[r.random_range(0..W.len())]
            };
            (format!("i32 {w}"), w.to_le_bytes().to_vec())
        }
    };
    let all = r.random_bool(0.1);
    let at = r.random_range(0..count);
    for k in 0..count {
        if all || k == at {
            let w = bytes.1.len().min(width);
            t.data[k * width..k * width + w].copy_from_slice(&bytes.1[..w]);
        }
    }
    let place = if all {
        "every element".to_string()
    } else {
        format!("element {at}")
    };
    format!("value {} ({}) {place} = {}", t.name, t.dtype, bytes.0)
}

fn flip_bits(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let Some((f, t)) = pick(m, r) else {
        return "flip: no tensor".into();
    };
    let t = &mut m.files[f].tensors[t];
    if t.data.is_empty() {
        return format!("flip {}: empty", t.name);
    }
    let n = r.random_range(1..=8);
    for _ in 0..n {
        let p = r.random_range(0..t.data.len());
        t.data[p] ^= 1 << r.random_range(0..8);
    }
    format!("flip {n} bits in {}", t.name)
}

/// Resizes `t.data` to what its shape and dtype say, when that is small; so the header
/// stays valid and the mutation reaches the loader.
fn fit(t: &mut Tensor, r: &mut ChaCha8Rng) -> bool {
    let Some(dims) = t.shape.as_array() else {
        return false;
    };
    let mut n = Tensor::elem_bytes(&t.dtype) as u64;
    for d in dims {
        match d.as_u64() {
            Some(d) => n = n.saturating_mul(d),
            None => return false,
        }
    }
    if n > 1 << 20 {
        return false;
    }
    let fill: u8 = if r.random_bool(0.5) { 0 } else { r.random() };
    t.data.resize(n as usize, fill);
    true
}

fn shape(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let Some((f, t)) = pick(m, r) else {
        return "shape: no tensor".into();
    };
    let t = &mut m.files[f].tensors[t];
    let before = t.shape.to_string();
    let Some(dims) = t.shape.as_array_mut() else {
        return format!("shape {}: not an array", t.name);
    };
    let consistent = r.random_bool(0.6);
    match r.random_range(0..10) {
        0 => {
            dims.pop();
        }
        1 => dims.push(json!(1)),
        2 => dims.insert(0, json!(r.random_range(1..4))),
        3 if dims.len() >= 2 => {
            let (a, b) = (r.random_range(0..dims.len()), r.random_range(0..dims.len()));
            dims.swap(a, b)
        }
        4 => {
            let n = dims
                .iter()
                .filter_map(|d| d.as_u64())
                .fold(1u64, u64::saturating_mul);
            *dims = vec![json!(n)];
        }
        _ if !dims.is_empty() => {
            let d = r.random_range(0..dims.len());
            let old = dims[d].as_u64().unwrap_or(1);
            let edge: [Value; 20] = [
                json!(0),
                json!(1),
                json!(2),
                json!(3),
                json!(old.saturating_add(1)),
                json!(old.saturating_sub(1)),
                json!(old.saturating_mul(2)),
                json!(old / 2),
                json!(31),
                json!(33),
                json!(129),
                json!(1u64 << 32),
                json!(1u64 << 40),
                json!(1u64 << 62),
                json!(u64::MAX),
                json!(-1),
                json!(1.5),
                json!("4"),
                Value::Null,
                json!(old.saturating_mul(16)),
            ];
            dims[d] = edge[r.random_range(0..edge.len())].clone();
        }
        _ => dims.push(json!(0)),
    }
    let fitted = consistent && fit(t, r);
    let how = if fitted { " (data resized)" } else { "" };
    format!("shape {} {before} -> {}{how}", t.name, t.shape)
}

fn dtype(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    const D: [&str; 22] = [
        "F32", "BF16", "F16", "F64", "I8", "U8", "I16", "I32", "I64", "U16", "U32", "U64", "BOOL",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "Q4_K", "",
    ];
    let Some((f, t)) = pick(m, r) else {
        return "dtype: no tensor".into();
    };
    let t = &mut m.files[f].tensors[t];
    let before = std::mem::replace(&mut t.dtype, D[r.random_range(0..D.len())].to_string());
    let fitted = r.random_bool(0.6) && fit(t, r);
    let how = if fitted { " (data resized)" } else { "" };
    format!("dtype {} {before} -> {}{how}", t.name, t.dtype)
}

fn offsets(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let Some((f, t)) = pick(m, r) else {
        return "offsets: no tensor".into();
    };
    let file = &mut m.files[f];
    let a: u64 = file.tensors[..t].iter().map(|x| x.data.len() as u64).sum();
    let b = a + file.tensors[t].data.len() as u64;
    let o = match r.random_range(0..8) {
        0 => json!([b, a]),
        1 => json!([a, b + 1]),
        2 => json!([a + 1, b]),
        3 => json!([a, 1u64 << 40]),
        4 => json!([u64::MAX - 1, u64::MAX]),
        5 => json!([a]),
        6 => json!([0, 0]),
        _ => json!("x"),
    };
    let t = &mut file.tensors[t];
    t.offsets = Some(o);
    format!(
        "offsets {} [{a}, {b}] -> {}",
        t.name,
        t.offsets.as_ref().unwrap()
    )
}

fn names(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let Some((f, t)) = pick(m, r) else {
        return "names: no tensor".into();
    };
    let file = &mut m.files[f];
    let name = file.tensors[t].name.clone();
    match r.random_range(0..6) {
        0 => {
            file.tensors.remove(t);
            format!("delete {name}")
        }
        1 => {
            let mut copy = file.tensors[t].clone();
            copy.data.iter_mut().for_each(|b| *b = b.wrapping_add(1));
            file.tensors.push(copy);
            format!("duplicate {name} (second copy's bytes +1)")
        }
        2 => {
            let (from, to) = [
                (".experts.0.", ".experts.4."),
                (".experts.1.", ".experts.99."),
                (".layers.1.", ".layers.0."),
                (".layers.1.", ".layers.5."),
                (".layers.1.", ".layers.99999999999999999999."),
                ("_proj", "_projx"),
                ("weight", "weight_scale"),
            ][r.random_range(0..7)];
            let new = name.replacen(from, to, 1);
            if r.random_bool(0.5) {
                file.tensors[t].name = new.clone();
                format!("rename {name} -> {new}")
            } else {
                let mut copy = file.tensors[t].clone();
                copy.name = new.clone();
                file.tensors.push(copy);
                format!("copy {name} as {new}")
            }
        }
        3 => {
            file.tensors[t].name.push('x');
            format!("rename {name} -> {name}x")
        }
        4 => {
            let k = r.random_range(0..file.tensors.len());
            file.tensors.swap(t, k);
            format!("reorder {name} with tensor {k}")
        }
        _ => {
            file.tensors[t].name = String::new();
            format!("rename {name} -> ''")
        }
    }
}

fn raw(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    if m.files.is_empty() {
        return "raw: no file".into();
    }
    let f = r.random_range(0..m.files.len());
    let file = &mut m.files[f];
    // positions biased to the header, which is the first few percent of the file
    let frac = |r: &mut ChaCha8Rng| {
        if r.random_bool(0.6) {
            r.random_range(0..u32::MAX / 16)
        } else {
            r.random()
        }
    };
    let e = match r.random_range(0..5) {
        0 => RawEdit::Truncate(frac(r)),
        1 | 2 => RawEdit::FlipBit(frac(r), r.random_range(0..8)),
        3 => RawEdit::HeaderLen([0, 1, 7, 1 << 40, u64::MAX, 100_000_001][r.random_range(0..6)]),
        _ => RawEdit::Append((0..r.random_range(1..16)).map(|_| r.random()).collect()),
    };
    let d = format!("raw {}: {e:?}", file.path);
    file.raw.push(e);
    d
}

fn shards(m: &mut Model, r: &mut ChaCha8Rng) -> String {
    let idx = "model.safetensors.index.json";
    match r.random_range(0..4) {
        // the same names in two files with no index: which one is meant?
        0 if m.files[0].path == "model.safetensors" => {
            m.files[0].path = "a.safetensors".into();
            let mut b = StFile {
                path: "b.safetensors".into(),
                ..StFile::default()
            };
            for t in &m.files[0].tensors {
                if r.random_bool(0.3) {
                    let mut c = t.clone();
                    c.data.iter_mut().for_each(|x| *x = x.wrapping_mul(3));
                    b.tensors.push(c);
                }
            }
            m.files.push(b);
            "split: model.safetensors as a.safetensors plus b.safetensors repeating some names"
                .into()
        }
        1 if m.files.len() > 1 => {
            let k = r.random_range(0..m.files.len());
            let p = m.files.remove(k).path;
            format!("delete file {p}")
        }
        2 => {
            let bad = [
                "missing.safetensors",
                "../model.safetensors",
                "",
                "/etc/passwd",
            ][r.random_range(0..4)];
            let mut map = serde_json::Map::new();
            for f in &m.files {
                for t in &f.tensors {
                    map.insert(t.name.clone(), json!(f.path));
                }
            }
            let k = r.random_range(0..map.len().max(1));
            if let Some((_, v)) = map.iter_mut().nth(k) {
                *v = json!(bad);
            }
            m.jsons.retain(|(p, _)| p != idx);
            m.jsons
                .push((idx.into(), json!({"metadata": {}, "weight_map": map})));
            format!("index naming one tensor's file '{bad}'")
        }
        _ => {
            let algo = [json!("FP8"), json!("NVFP4"), json!("INT4"), json!(7)]
                [r.random_range(0..4)]
            .clone();
            let q = json!({"quantization": {"quant_algo": algo, "group_size": 16}});
            m.jsons.retain(|(p, _)| p != "hf_quant_config.json");
            m.jsons.push(("hf_quant_config.json".into(), q.clone()));
            format!("hf_quant_config.json = {q}")
        }
    }
}

/// What the final mutant holds that the loader must refuse, if anything: a non-finite
/// value (or NaN code) in a tensor of the MoE block (with that tensor's name, unless it
/// is an adapter's), or one name in two files with no index.
fn invalid(m: &Model) -> Option<(String, Option<String>)> {
    for f in &m.files {
        for t in f.tensors.iter().filter(|t| reads(m, &t.name)) {
            let bad = match (t.role, t.dtype.as_str()) {
                (Role::Float, d @ ("F32" | "BF16" | "F16")) => {
                    let w = Tensor::elem_bytes(d);
                    t.data.chunks_exact(w).any(|b| {
                        let x = match d {
                            "F32" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                            "BF16" => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                            _ => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                        };
                        !x.is_finite()
                    })
                }
                (Role::Fp8, "F8_E4M3") => t.data.iter().any(|&c| c & 0x7F == 0x7F),
                (Role::E8m0, "U8") => t.data.contains(&0xFF),
                _ => false,
            };
            if bad {
                let why = format!("a non-finite value in {} ({})", t.name, t.dtype);
                let model_tensor = !f.path.starts_with("adapter/");
                return Some((why, model_tensor.then(|| t.name.clone())));
            }
        }
    }
    let indexed = m.jsons.iter().any(|(p, _)| p.ends_with(".index.json"));
    if !indexed {
        let mut seen = std::collections::BTreeMap::new();
        for f in m.files.iter().filter(|f| !f.path.starts_with("adapter/")) {
            for t in &f.tensors {
                if let Some(other) = seen.insert(t.name.as_str(), f.path.as_str()) {
                    if other != f.path && reads(m, &t.name) {
                        return Some((format!("{} in both {other} and {}", t.name, f.path), None));
                    }
                }
            }
        }
    }
    None
}
