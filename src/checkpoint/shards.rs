//! The tensors of a checkpoint: one `model.safetensors`, or many shards named by
//! `model.safetensors.index.json` (`{"weight_map": {tensor: file}}`). Files are
//! memory-mapped on first use and their headers parsed once; a tensor is copied out only
//! when asked for, so opening a large checkpoint and listing its tensors is cheap.

use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One tensor copied out of a shard: its dtype, shape and little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub file: String,
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

struct ShardFile {
    map: Mmap,
    header: usize,
    meta: Metadata,
}

/// The set of safetensors files of a model directory.
pub struct Shards {
    dir: PathBuf,
    /// Tensor name → file name (relative to `dir`).
    map: BTreeMap<String, String>,
    open: Mutex<HashMap<String, Arc<ShardFile>>>,
    /// Names of the tensors copied out so far.
    read: Mutex<BTreeSet<String>>,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Shards {
    /// Finds the tensors of `dir` (index file, or the single `model.safetensors`, or every
    /// `*.safetensors` in the directory), or those of one `.safetensors` file.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_named(dir, "model.safetensors")
    }

    /// As `open`, with the single-file name to look for (`adapter_model.safetensors`).
    pub fn open_named(dir: &Path, single: &str) -> Result<Self> {
        let shards = Shards {
            dir: dir.to_path_buf(),
            map: BTreeMap::new(),
            open: Mutex::new(HashMap::new()),
            read: Mutex::new(BTreeSet::new()),
        };
        let index = dir.join(format!("{single}.index.json"));
        let mut map = BTreeMap::new();
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e))?;
            if let Some(dup) = repeated_key(text.as_bytes(), Some("weight_map")) {
                return Err(Error::checkpoint(
                    index.display(),
                    dup,
                    "named twice in weight_map (JSON keeps only the last)",
                ));
            }
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::checkpoint(index.display(), "", format!("not valid JSON: {e}"))
            })?;
            let weights = json
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| Error::checkpoint(index.display(), "", "no weight_map object"))?;
            for (name, file) in weights {
                let file = file.as_str().ok_or_else(|| {
                    Error::checkpoint(index.display(), name, "file name is not a string")
                })?;
                if file.contains("..") || file.contains('/') || file.contains('\\') {
                    return Err(Error::checkpoint(
                        index.display(),
                        name,
                        format!("shard '{file}' is not a file in the model directory"),
                    ));
                }
                map.insert(name.clone(), file.to_string());
            }
        } else {
            let mut files = Vec::new();
            if dir.join(single).exists() {
                files.push(single.to_string());
            } else {
                let rd = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
                for entry in rd {
                    let entry = entry.map_err(|e| io(dir, e))?;
                    let name = entry.file_name().to_string_lossy().to_string();
                    if name.ends_with(".safetensors") {
                        files.push(name);
                    }
                }
                files.sort();
            }
            if files.is_empty() {
                return Err(Error::checkpoint(
                    dir.display(),
                    "",
                    format!("no {single}, index or *.safetensors file"),
                ));
            }
            for f in files {
                let shard = shards.file(&f)?;
                for name in shard.meta.tensors().keys() {
                    if let Some(other) = map.insert(name.clone(), f.clone()) {
                        return Err(Error::checkpoint(
                            dir.join(&f).display(),
                            name,
                            format!("also stored in {other}; which one is meant is unknown"),
                        ));
                    }
                }
            }
        }
        Ok(Shards { map, ..shards })
    }

    /// Opens every shard the index names and checks that each holds the tensors the index
    /// puts in it: the header-only check a person runs on a download before serving it.
    pub fn check(&self) -> Result<()> {
        let mut files: Vec<&String> = self.map.values().collect();
        files.sort();
        files.dedup();
        for f in files {
            let shard = self.file(f)?;
            if let Some((name, _)) = self
                .map
                .iter()
                .find(|(n, g)| *g == f && shard.meta.info(n).is_none())
            {
                return Err(Error::checkpoint(
                    self.dir.join(f).display(),
                    name,
                    "named in the index for this shard, but not in it",
                ));
            }
        }
        Ok(())
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.map.keys().map(|s| s.as_str())
    }

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn file(&self, file: &str) -> Result<Arc<ShardFile>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(file) {
            return Ok(f.clone());
        }
        let path = self.dir.join(file);
        let handle = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        // SAFETY: the map is read-only; a checkpoint changed underneath a running process is
        // outside what any loader can defend against (the safetensors crate documents the
        // same contract). Every offset is validated before it is read.
        let map = unsafe { Mmap::map(&handle) }.map_err(|e| io(&path, e))?;
        // serde_json keeps the last of repeated keys: a header naming a tensor twice
        // would silently load one of two different tensors.
        if let Some(dup) = header_bytes(&map).and_then(|h| repeated_key(h, None)) {
            return Err(Error::checkpoint(
                path.display(),
                dup,
                "named twice in the safetensors header",
            ));
        }
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
            Error::checkpoint(
                path.display(),
                "",
                format!("not a valid safetensors file: {e}"),
            )
        })?;
        let shard = Arc::new(ShardFile { map, header, meta });
        open.insert(file.to_string(), shard.clone());
        Ok(shard)
    }

    /// The path of the file holding `name` (the directory if it is absent), for errors.
    pub fn file_of(&self, name: &str) -> String {
        match self.map.get(name) {
            Some(f) => self.dir.join(f).display().to_string(),
            None => self.dir.display().to_string(),
        }
    }

    /// Dtype and shape of a tensor without reading its data; `None` if absent.
    pub fn info(&self, name: &str) -> Result<Option<(Dtype, Vec<usize>)>> {
        let Some(file) = self.map.get(name) else {
            return Ok(None);
        };
        let shard = self.file(file)?;
        Ok(shard.meta.info(name).map(|i| (i.dtype, i.shape.clone())))
    }

    /// Copies a tensor out; an error naming the file and tensor if it is absent or its
    /// bytes do not match its dtype and shape.
    /// The tensors copied out so far, in name order: what the loads up to now depended on
    /// (tensors of other layers, attention and so on are never read).
    pub fn tensors_read(&self) -> Vec<String> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.iter().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Result<RawTensor> {
        self.read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        let file = self.map.get(name).ok_or_else(|| {
            Error::checkpoint(self.dir.display(), name, "tensor not found in checkpoint")
        })?;
        let path = self.dir.join(file).display().to_string();
        let shard = self.file(file)?;
        let info: &TensorInfo = shard.meta.info(name).ok_or_else(|| {
            Error::checkpoint(
                &path,
                name,
                "the index names this file, but the tensor is not in it",
            )
        })?;
        let (start, end) = info.data_offsets;
        let base = 8 + shard.header;
        let bytes = base
            .checked_add(start)
            .zip(base.checked_add(end))
            .and_then(|(s, e)| shard.map.get(s..e))
            .ok_or_else(|| Error::checkpoint(&path, name, "data offsets outside the file"))?;
        let elems = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::checkpoint(&path, name, "shape overflows"))?;
        if elems.checked_mul(info.dtype.bitsize()) != Some(bytes.len() * 8) {
            return Err(Error::checkpoint(
                &path,
                name,
                format!(
                    "{} bytes do not hold {:?} {:?}",
                    bytes.len(),
                    info.dtype,
                    info.shape
                ),
            ));
        }
        Ok(RawTensor {
            file: path,
            name: name.to_string(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            data: bytes.to_vec(),
        })
    }
}

impl RawTensor {
    fn err(&self, why: impl Into<String>) -> Error {
        Error::checkpoint(&self.file, &self.name, why)
    }

    /// Elements in the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks the shape (dimensions of size 1 may be left out or added, as checkpoints
    /// store per-tensor scales as `[]`, `[1]` or `[1, 1]`).
    pub fn expect_shape(&self, want: &[usize]) -> Result<()> {
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if squeeze(&self.shape) == squeeze(want) {
            Ok(())
        } else {
            Err(self.err(format!("shape {:?}, expected {want:?}", self.shape)))
        }
    }

    /// Checks the dtype.
    pub fn expect_dtype(&self, want: &[Dtype]) -> Result<()> {
        if want.contains(&self.dtype) {
            Ok(())
        } else {
            Err(self.err(format!("dtype {:?}, expected one of {want:?}", self.dtype)))
        }
    }

    /// The raw bytes of an 8-bit tensor (U8, I8, F8_*).
    pub fn bytes(&self, want: &[Dtype]) -> Result<Vec<u8>> {
        self.expect_dtype(want)?;
        Ok(self.data.clone())
    }

    /// Values of a floating-point tensor (F32, F16, BF16, F64, F8_E4M3) as f32.
    pub fn f32s(&self) -> Result<Vec<f32>> {
        use crate::formats::{MiniFloat, F8E4M3};
        let d = &self.data;
        Ok(match self.dtype {
            Dtype::F32 => values::<f32>(d),
            Dtype::F64 => values::<f64>(d).into_iter().map(|v| v as f32).collect(),
            Dtype::F16 => values::<half::f16>(d).into_iter().map(f32::from).collect(),
            Dtype::BF16 => values::<half::bf16>(d).into_iter().map(f32::from).collect(),
            Dtype::F8_E4M3 => d.iter().map(|&b| F8E4M3::from_bits(b).to_f32()).collect(),
            // UE8M0 exponent bytes (DeepSeek-V3.1's `scale_fmt: "ue8m0"` scales): 2^(b − 127),
            // exact in f32; 0xFF is NaN (the scale checks then refuse it).
            Dtype::F8_E8M0 => d.iter().map(|&b| ue8m0(b)).collect(),
            other => return Err(self.err(format!("dtype {other:?} is not a float type"))),
        })
    }

    /// Values of an integer tensor (I32, I64, I16, I8, U8) as i64.
    pub fn ints(&self) -> Result<Vec<i64>> {
        let d = &self.data;
        Ok(match self.dtype {
            Dtype::I32 => values::<i32>(d).into_iter().map(i64::from).collect(),
            Dtype::I64 => values::<i64>(d),
            Dtype::I16 => values::<i16>(d).into_iter().map(i64::from).collect(),
            Dtype::I8 => d.iter().map(|&b| b as i8 as i64).collect(),
            Dtype::U8 => d.iter().map(|&b| b as i64).collect(),
            other => return Err(self.err(format!("dtype {other:?} is not an integer type"))),
        })
    }

    /// The words of an int32-packed tensor.
    pub fn i32s(&self) -> Result<Vec<i32>> {
        self.expect_dtype(&[Dtype::I32])?;
        Ok(values::<i32>(&self.data))
    }

    /// The single value of a per-tensor scale.
    pub fn scalar(&self) -> Result<f32> {
        let v = self.f32s()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(self.err(format!("expected one value, found {}", v.len()))),
        }
    }
}

/// The JSON header of a safetensors file (after its 8-byte length), if the length fits.
fn header_bytes(file: &[u8]) -> Option<&[u8]> {
    let n = u64::from_le_bytes(file.get(..8)?.try_into().ok()?);
    file.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)
}

/// The first key repeated in the top-level JSON object of `json` (or, with `inner`, in
/// the object under that top-level key); `None` when there is none or the text is not an
/// object (the real parser reports that).
fn repeated_key(json: &[u8], inner: Option<&str>) -> Option<String> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::collections::HashSet;
    use std::fmt;

    /// Walks an object's keys; descends into the value of `inner` if given.
    struct Keys<'a> {
        inner: Option<&'a str>,
    }
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut m: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            let mut found = None;
            while let Some(k) = m.next_key::<String>()? {
                if self.inner == Some(k.as_str()) {
                    let d = m.next_value_seed(Keys { inner: None })?;
                    found = found.or(d);
                } else {
                    m.next_value::<IgnoredAny>()?;
                    if self.inner.is_none() && !seen.insert(k.clone()) {
                        found = found.or(Some(k));
                    }
                }
            }
            Ok(found)
        }
    }
    impl<'de> DeserializeSeed<'de> for Keys<'_> {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    Keys { inner }.deserialize(&mut de).ok().flatten()
}

/// The values of type `T` in `bytes`, copied out (tensor data need not be aligned for
/// `T`); a trailing partial value is dropped. safetensors stores little-endian, which is
/// what these native-endian casts read on the little-endian hosts fleetmoe runs on.
fn values<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    let out: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    let n = out.len();
    out.copy_from_slice(&bytes[..n]);
    v
}

/// The value of a UE8M0 exponent byte: 2^(b − 127), exact in f32 (subnormal below 2^-126);
/// 0xFF is NaN.
pub(crate) fn ue8m0(b: u8) -> f32 {
    if b == 0xFF {
        f32::NAN
    } else {
        2f32.powi(b as i32 - 127)
    }
}
