//! Reads a CTranslate2 model file (`model.bin`): the binary layout CTranslate2 writes, parsed by
//! hand so the plugin needs neither CTranslate2 nor a conversion step.
//!
//! Layout (all integers little-endian): `u32` format version, the spec name, `u32` spec revision,
//! `u32` tensor count; per tensor its name, `u8` rank, `rank × u32` dims, `u8` dtype, `u32` byte
//! count and the raw data; then, optionally, `u32` alias count and `(alias, target)` name pairs.
//! Strings are a `u16` length (counting a trailing NUL) and that many bytes.

use std::collections::HashMap;

/// Element type of a stored tensor (CTranslate2's `DataType` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// Signed 8-bit integer (quantized weights, scalar flags).
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One stored tensor: a view into the file's bytes.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    /// Dimensions, outermost first; empty for a scalar.
    pub dims: Vec<usize>,
    /// Element type of `data`.
    pub dtype: Dtype,
    /// Raw little-endian elements, `dims` product × `dtype.size()` bytes.
    pub data: &'a [u8],
}

impl RawTensor<'_> {
    /// The value of an integer scalar (rank 0, or a single element), if it is one.
    pub fn scalar_int(&self) -> Option<i64> {
        let d = self.data;
        match (self.dtype, d.len()) {
            (Dtype::I8, 1) => Some(i64::from(d[0] as i8)),
            (Dtype::I16, 2) => Some(i64::from(i16::from_le_bytes([d[0], d[1]]))),
            (Dtype::I32, 4) => Some(i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
            _ => None,
        }
    }
}

/// A parsed `model.bin`: its spec name and tensors by name (aliases resolved).
#[derive(Debug)]
pub struct Ct2File<'a> {
    /// The model spec, e.g. `WhisperSpec`.
    pub spec: String,
    /// Tensors by name (`encoder/layer_0/self_attention/linear_0/weight`…).
    pub tensors: HashMap<String, RawTensor<'a>>,
}

/// Why a file is not a CTranslate2 model this reader understands.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    /// The file ended inside a field.
    #[error("truncated at byte {offset} (reading {what})")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
        /// Which field.
        what: &'static str,
    },
    /// A field holds a value the format does not allow.
    #[error("at byte {offset}: {message}")]
    Invalid {
        /// Where the field starts.
        offset: usize,
        /// What is wrong.
        message: String,
    },
}

/// Oldest and newest binary format versions this reader accepts (CTranslate2 3.x–4.x write 6).
const VERSIONS: std::ops::RangeInclusive<u32> = 3..=6;

/// Parses `bytes` (a whole `model.bin`).
///
/// # Errors
/// [`Ct2Error`] when the bytes are truncated or not in the layout above.
pub fn parse(bytes: &[u8]) -> Result<Ct2File<'_>, Ct2Error> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u32("version")?;
    if !VERSIONS.contains(&version) {
        return Err(r.invalid(
            0,
            format!("format version {version}, expected {VERSIONS:?}"),
        ));
    }
    let spec = r.string("spec name")?.to_string();
    let _revision = r.u32("spec revision")?;
    let count = r.u32("tensor count")?;
    let mut tensors = HashMap::new();
    for _ in 0..count {
        let name = r.string("tensor name")?.to_string();
        let rank = r.u8("rank")?;
        let dims_at = r.pos;
        let dims = (0..rank)
            .map(|_| r.u32("dims").map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let code_at = r.pos;
        let dtype = Dtype::from_code(r.u8("dtype")?)
            .ok_or_else(|| r.invalid(code_at, format!("{name}: unknown dtype")))?;
        let len = r.u32("byte count")? as usize;
        let data = r.take(len, "tensor data")?;
        let elements = dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
        if elements.and_then(|n| n.checked_mul(dtype.size())) != Some(len) {
            return Err(r.invalid(
                dims_at,
                format!("{name}: {len} bytes for dims {dims:?} of {dtype:?}"),
            ));
        }
        tensors.insert(name, RawTensor { dims, dtype, data });
    }
    if r.pos < bytes.len() {
        let aliases = r.u32("alias count")?;
        for _ in 0..aliases {
            let alias = r.string("alias")?.to_string();
            let at = r.pos;
            let target = r.string("alias target")?;
            let tensor = tensors
                .get(target)
                .cloned()
                .ok_or_else(|| r.invalid(at, format!("alias {alias} names unknown {target}")))?;
            tensors.insert(alias, tensor);
        }
    }
    Ok(Ct2File { spec, tensors })
}

/// A cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Ct2Error::Truncated {
                offset: self.pos,
                what,
            });
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed string without its trailing NUL.
    fn string(&mut self, what: &'static str) -> Result<&'a str, Ct2Error> {
        let at = self.pos;
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        std::str::from_utf8(bytes).map_err(|_| self.invalid(at, format!("{what} is not UTF-8")))
    }

    fn invalid(&self, offset: usize, message: String) -> Ct2Error {
        Ct2Error::Invalid { offset, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend(((s.len() + 1) as u16).to_le_bytes());
        out.extend(s.as_bytes());
        out.push(0);
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend(3u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        // A 2×2 f16 matrix of ones.
        string(&mut b, "a/weight");
        b.push(2);
        b.extend(2u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        b.push(4);
        b.extend(8u32.to_le_bytes());
        for _ in 0..4 {
            b.extend(0x3c00u16.to_le_bytes());
        }
        // An i16 scalar.
        string(&mut b, "num_heads");
        b.push(0);
        b.push(2);
        b.extend(2u32.to_le_bytes());
        b.extend(6i16.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        string(&mut b, "b/weight");
        string(&mut b, "a/weight");
        b
    }

    #[test]
    fn parses_tensors_scalars_and_aliases() {
        let bytes = sample();
        let file = parse(&bytes).unwrap();
        assert_eq!(file.spec, "WhisperSpec");
        let a = &file.tensors["a/weight"];
        assert_eq!(
            (&a.dims[..], a.dtype, a.data.len()),
            (&[2, 2][..], Dtype::F16, 8)
        );
        assert_eq!(file.tensors["num_heads"].scalar_int(), Some(6));
        assert_eq!(file.tensors["b/weight"].data, a.data);
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        let bytes = sample();
        // The alias table: count, then two strings of 2 + 9 bytes.
        let without_aliases = bytes.len() - (4 + 2 * 11);
        assert_eq!(parse(&bytes[..without_aliases]).unwrap().tensors.len(), 2);
        for len in (0..bytes.len()).filter(|l| *l != without_aliases) {
            assert!(parse(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
    }

    #[test]
    fn a_size_that_disagrees_with_the_dims_is_refused() {
        let mut bytes = sample();
        // The first tensor's byte count (8) sits after version, spec, revision, count, name,
        // rank, dims and dtype.
        let at = 4 + 2 + 12 + 4 + 4 + 2 + 9 + 1 + 8 + 1;
        assert_eq!(&bytes[at..at + 4], &8u32.to_le_bytes());
        bytes[at] = 6;
        assert!(matches!(parse(&bytes), Err(Ct2Error::Invalid { .. })));
    }
}
