//! A model directory held in memory so a mutator can edit what a serializer would never
//! write: safetensors headers with any shape, dtype or offsets JSON, duplicate names,
//! truncated files, and JSON configs by value or as raw bytes.

use serde_json::{json, Value};
use std::path::Path;

/// What a tensor's bytes mean, so value mutations can aim at meaning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// f32 / bf16 / f16 weights, scales, biases.
    Float,
    /// e4m3 codes (weights or block scales).
    Fp8,
    /// e8m0 exponents (MX scales).
    E8m0,
    /// Packed sub-byte codes (fp4, fp6, uint8 words).
    Packed,
    /// i32 words: packed ints, zero points, g_idx, weight_shape.
    Int,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Value,
    pub data: Vec<u8>,
    /// Replaces the computed `data_offsets` when set.
    pub offsets: Option<Value>,
    pub role: Role,
}

impl Tensor {
    /// Bytes per element of the dtype string (1 for unknown ones).
    pub fn elem_bytes(dtype: &str) -> usize {
        match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "BF16" | "F16" | "I16" | "U16" => 2,
            _ => 1,
        }
    }
}

/// An edit of the serialized bytes; positions are fractions of the length in 1/2^32.
#[derive(Clone, Debug)]
pub enum RawEdit {
    Truncate(u32),
    FlipBit(u32, u8),
    HeaderLen(u64),
    Append(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
pub struct StFile {
    /// Path relative to the model directory.
    pub path: String,
    pub tensors: Vec<Tensor>,
    pub raw: Vec<RawEdit>,
}

impl StFile {
    /// The file as safetensors bytes: 8-byte header length, header JSON, data.
    pub fn serialize(&self) -> Vec<u8> {
        let mut header = String::from("{");
        let (mut off, mut data) = (0u64, Vec::new());
        for (k, t) in self.tensors.iter().enumerate() {
            let end = off + t.data.len() as u64;
            let offs = t.offsets.clone().unwrap_or(json!([off, end]));
            if k > 0 {
                header.push(',');
            }
            header += &format!(
                "{}:{{\"dtype\":{},\"shape\":{},\"data_offsets\":{}}}",
                Value::from(t.name.as_str()),
                Value::from(t.dtype.as_str()),
                t.shape,
                offs
            );
            data.extend_from_slice(&t.data);
            off = end;
        }
        header.push('}');
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&data);
        for e in &self.raw {
            apply_raw(&mut out, e);
        }
        out
    }
}

fn at(len: usize, frac: u32) -> usize {
    ((len as u64 * frac as u64) >> 32) as usize
}

pub fn apply_raw(out: &mut Vec<u8>, e: &RawEdit) {
    match e {
        RawEdit::Truncate(f) => out.truncate(at(out.len(), *f)),
        RawEdit::FlipBit(f, bit) => {
            if !out.is_empty() {
                let p = at(out.len(), *f).min(out.len() - 1);
                out[p] ^= 1 << (bit % 8);
            }
        }
        RawEdit::HeaderLen(n) => {
            if out.len() >= 8 {
                out[..8].copy_from_slice(&n.to_le_bytes());
            }
        }
        RawEdit::Append(b) => out.extend_from_slice(b),
    }
}

/// One model directory (with an optional PEFT adapter under `adapter/`).
#[derive(Clone, Debug)]
pub struct Model {
    pub label: &'static str,
    /// `config.json`, `hf_quant_config.json`, index and adapter configs, by relative path.
    pub jsons: Vec<(String, Value)>,
    /// Raw bytes that replace a JSON file's text (text-level mutations).
    pub raw_json: Vec<(String, Vec<u8>)>,
    pub files: Vec<StFile>,
    /// Name prefix of the MoE block under test (for aiming mutations).
    pub block: String,
    pub adapter: bool,
}

impl Model {
    /// Writes every file under `dir`, which must be empty.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        if self.adapter {
            std::fs::create_dir_all(dir.join("adapter"))?;
        }
        for (p, v) in &self.jsons {
            match self.raw_json.iter().find(|(q, _)| q == p) {
                Some((_, raw)) => std::fs::write(dir.join(p), raw)?,
                None => std::fs::write(dir.join(p), v.to_string())?,
            }
        }
        for f in &self.files {
            std::fs::write(dir.join(&f.path), f.serialize())?;
        }
        Ok(())
    }
}

/// Converts a `tests/ckpt` writer's tensors; U8 tensors named `*scale*` are e8m0 when `mx`.
pub fn from_writer(wr: &crate::ckpt::Writer, path: &str, mx: bool) -> StFile {
    let tensors = wr
        .tensors
        .iter()
        .map(|(name, (dtype, shape, data))| {
            let dtype = format!("{dtype:?}");
            let role = match dtype.as_str() {
                "F32" | "BF16" | "F16" => Role::Float,
                "F8_E4M3" => Role::Fp8,
                "U8" if mx && name.contains("scale") => Role::E8m0,
                "U8" => Role::Packed,
                _ => Role::Int,
            };
            Tensor {
                name: name.clone(),
                dtype,
                shape: json!(shape),
                data: data.clone(),
                offsets: None,
                role,
            }
        })
        .collect();
    StFile {
        path: path.into(),
        tensors,
        raw: vec![],
    }
}
