//! AMF0, the value encoding of RTMP's commands and metadata: as much of it as encoders
//! send (numbers, booleans, strings, objects, ECMA and strict arrays, null, undefined,
//! dates), with nesting and sizes bounded by the message they arrive in.

use bytes::{Buf, BufMut, Bytes};

/// Deepest nesting of objects and arrays accepted.
pub const MAX_DEPTH: usize = 16;

/// An AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (also a date, as its milliseconds).
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A string (short or long).
    String(String),
    /// An object or ECMA array: properties in order.
    Object(Vec<(String, Value)>),
    /// A strict array.
    Array(Vec<Value>),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The property `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why AMF0 bytes could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AmfError {
    /// The bytes end inside a value.
    #[error("AMF0 value truncated")]
    Truncated,
    /// A type marker this reader does not take (AMF3 switch, references, XML...).
    #[error("AMF0 type marker {0:#04x} not supported")]
    Marker(u8),
    /// Nesting beyond [`MAX_DEPTH`].
    #[error("AMF0 values nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A string that is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    Utf8,
}

/// Reads every value in `bytes`.
pub fn decode_all(mut bytes: Bytes) -> Result<Vec<Value>, AmfError> {
    let mut values = Vec::new();
    while bytes.has_remaining() {
        values.push(decode(&mut bytes, 0)?);
    }
    Ok(values)
}

/// Reads one value.
pub fn decode(buf: &mut Bytes, depth: usize) -> Result<Value, AmfError> {
    if depth > MAX_DEPTH {
        return Err(AmfError::TooDeep);
    }
    let marker = take_u8(buf)?;
    Ok(match marker {
        0x00 => Value::Number(take_f64(buf)?),
        0x01 => Value::Bool(take_u8(buf)? != 0),
        0x02 => {
            let len = take_u16(buf)? as usize;
            Value::String(take_string(buf, len)?)
        }
        0x03 => Value::Object(properties(buf, depth)?),
        0x05 => Value::Null,
        0x06 => Value::Undefined,
        0x08 => {
            // The count is advisory (encoders get it wrong); the end marker ends it.
            take_u32(buf)?;
            Value::Object(properties(buf, depth)?)
        }
        0x0a => {
            let count = take_u32(buf)? as usize;
            // Every value takes at least one byte: a count beyond the bytes left is a lie.
            if count > buf.remaining() {
                return Err(AmfError::Truncated);
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(decode(buf, depth + 1)?);
            }
            Value::Array(items)
        }
        0x0b => {
            let ms = take_f64(buf)?;
            take_u16(buf)?; // time zone, unused
            Value::Number(ms)
        }
        0x0c => {
            let len = take_u32(buf)? as usize;
            Value::String(take_string(buf, len)?)
        }
        other => return Err(AmfError::Marker(other)),
    })
}

/// Object properties up to the end marker (`00 00 09`).
fn properties(buf: &mut Bytes, depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
    let mut props = Vec::new();
    loop {
        let len = take_u16(buf)? as usize;
        // An empty key followed by the end marker ends the object (an empty key with a
        // value is legal if odd).
        if len == 0 && buf.first() == Some(&0x09) {
            buf.advance(1);
            return Ok(props);
        }
        let key = take_string(buf, len)?;
        let value = decode(buf, depth + 1)?;
        props.push((key, value));
    }
}

fn take_u8(buf: &mut Bytes) -> Result<u8, AmfError> {
    buf.try_get_u8().map_err(|_| AmfError::Truncated)
}

fn take_u16(buf: &mut Bytes) -> Result<u16, AmfError> {
    buf.try_get_u16().map_err(|_| AmfError::Truncated)
}

fn take_u32(buf: &mut Bytes) -> Result<u32, AmfError> {
    buf.try_get_u32().map_err(|_| AmfError::Truncated)
}

fn take_f64(buf: &mut Bytes) -> Result<f64, AmfError> {
    buf.try_get_f64().map_err(|_| AmfError::Truncated)
}

fn take_string(buf: &mut Bytes, len: usize) -> Result<String, AmfError> {
    if buf.remaining() < len {
        return Err(AmfError::Truncated);
    }
    let raw = buf.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| AmfError::Utf8)
}

/// Appends one value.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Number(n) => {
            out.put_u8(0x00);
            out.put_f64(*n);
        }
        Value::Bool(b) => {
            out.put_u8(0x01);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.put_u8(0x02);
                out.put_u16(len);
                out.put_slice(s.as_bytes());
            }
            Err(_) => {
                out.put_u8(0x0c);
                out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
                out.put_slice(&s.as_bytes()[..s.len().min(u32::MAX as usize)]);
            }
        },
        Value::Object(props) => {
            out.put_u8(0x03);
            for (k, v) in props {
                let key = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
                out.put_u16(key.len() as u16);
                out.put_slice(key);
                encode(v, out);
            }
            out.put_slice(&[0, 0, 0x09]);
        }
        Value::Array(items) => {
            out.put_u8(0x0a);
            out.put_u32(items.len() as u32);
            for v in items {
                encode(v, out);
            }
        }
        Value::Null => out.put_u8(0x05),
        Value::Undefined => out.put_u8(0x06),
    }
}

/// An object from string keys.
pub fn object<const N: usize>(props: [(&str, Value); N]) -> Value {
    Value::Object(props.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A string value.
pub fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let values = vec![
            string("connect"),
            Value::Number(1.0),
            object([
                ("app", string("live")),
                ("flashVer", string("FMLE/3.0")),
                ("audioCodecs", Value::Number(3191.0)),
                ("nested", object([("deep", Value::Bool(true))])),
            ]),
            Value::Null,
            Value::Undefined,
            Value::Array(vec![Value::Number(2.5), string("")]),
        ];
        let mut out = Vec::new();
        for v in &values {
            encode(v, &mut out);
        }
        assert_eq!(decode_all(Bytes::from(out)).unwrap(), values);
    }

    #[test]
    fn ecma_array_and_date() {
        // onMetaData as ffmpeg writes it: an ECMA array whose count is ignored.
        let mut b = vec![0x08, 0, 0, 0, 99];
        b.extend_from_slice(&[0, 5]);
        b.extend_from_slice(b"width");
        b.push(0x00);
        b.extend_from_slice(&1280f64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 9]);
        b.push(0x0b);
        b.extend_from_slice(&5f64.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        let v = decode_all(Bytes::from(b)).unwrap();
        assert_eq!(v[0].get("width").and_then(Value::as_number), Some(1280.0));
        assert_eq!(v[1], Value::Number(5.0));
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(
            decode_all(Bytes::from_static(&[0x02, 0xff])),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_all(Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x05])),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_all(Bytes::from_static(&[0x11])),
            Err(AmfError::Marker(0x11))
        );
        let deep: Vec<u8> = std::iter::repeat_n([0x0a, 0, 0, 0, 1], 40)
            .flatten()
            .collect();
        assert_eq!(decode_all(Bytes::from(deep)), Err(AmfError::TooDeep));
        assert_eq!(
            decode_all(Bytes::from_static(&[0x02, 0, 2, 0xff, 0xfe])),
            Err(AmfError::Utf8)
        );
    }
}
