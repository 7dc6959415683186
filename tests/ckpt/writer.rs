//! `Writer`: tensors by name, written as one safetensors file or several shards with an
//! index, and `config.json`.

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Default)]
pub struct Writer {
    pub tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Writer {
    pub fn bytes(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) {
        self.tensors
            .insert(name.to_string(), (dtype, shape.to_vec(), data));
    }
    pub fn floats(&mut self, name: &str, dtype: Dtype, shape: &[usize], v: &[f32]) {
        let data: Vec<u8> = match dtype {
            Dtype::F32 => bytemuck::cast_slice(v).to_vec(),
            Dtype::BF16 => bytemuck::cast_slice(
                &v.iter()
                    .map(|&x| half::bf16::from_f32(x))
                    .collect::<Vec<_>>(),
            )
            .to_vec(),
            Dtype::F16 => bytemuck::cast_slice(
                &v.iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect::<Vec<_>>(),
            )
            .to_vec(),
            _ => panic!("not a float dtype"),
        };
        self.bytes(name, dtype, shape, data);
    }
    pub fn i32s(&mut self, name: &str, shape: &[usize], v: &[i32]) {
        self.bytes(name, Dtype::I32, shape, bytemuck::cast_slice(v).to_vec());
    }

    /// Writes `model.safetensors`, or `shards` files plus `model.safetensors.index.json`.
    pub fn write(&self, dir: &Path, shards: usize) {
        let names: Vec<&String> = self.tensors.keys().collect();
        let per = names.len().div_ceil(shards.max(1));
        let mut map = serde_json::Map::new();
        for (k, chunk) in names.chunks(per).enumerate() {
            let file = if shards <= 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", k + 1)
            };
            let views: Vec<(String, TensorView)> = chunk
                .iter()
                .map(|n| {
                    let (d, s, b) = &self.tensors[*n];
                    map.insert(n.to_string(), json!(file));
                    (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())
                })
                .collect();
            safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        }
        if shards > 1 {
            let idx = json!({"metadata": {}, "weight_map": map});
            std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
        }
    }
}

pub fn write_config(dir: &Path, config: &Value) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
}
