//! Media: what an RTMP encoder sends (FLV tag bodies carrying H.264 and AAC) turned
//! into MPEG-TS HLS segments cut at keyframes.
//!
//! - [`flv`] splits FLV audio and video tag bodies into codec configs and frames.
//! - [`avc`] reads the H.264 decoder configuration and rewrites access units from AVCC
//!   (length-prefixed) to Annex B (start codes), as MPEG-TS carries them.
//! - [`aac`] reads the AAC AudioSpecificConfig and writes ADTS headers.
//! - [`ts`] muxes access units and ADTS frames into 188-byte transport packets.
//! - [`segmenter`] decides where segments start and holds the open one.
//! - [`demux`] reads an MPEG-TS stream (SRT ingest) back into codec configs and frames.
//!
//! Every parser here reads untrusted bytes: no input panics, every length read is checked
//! against what is left, and outputs are bounded by their inputs.

pub mod aac;
pub mod avc;
mod bits;
pub mod demux;
pub mod flv;
pub mod fmp4;
pub mod probe;
pub mod segmenter;
mod sps;
pub mod ts;

/// Why media from an encoder could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The input ended before the named structure did.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A codec, profile or feature Shoal cannot put into MPEG-TS HLS (named).
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// A field holds a value its format does not allow (the field is named).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The open segment would grow to this many bytes, over the configured limit.
    #[error("segment would grow to {0} bytes, over the size limit")]
    SegmentTooLarge(u64),
    /// No keyframe came for this many milliseconds, longer than the longest segment allowed.
    #[error("no keyframe for {0} ms, longer than the longest segment allowed")]
    NoKeyframe(u64),
}
