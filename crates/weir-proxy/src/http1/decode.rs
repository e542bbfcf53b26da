//! HTTP/1.1 message bodies as their bytes arrive (RFC 9112 §6, §7): by
//! `Content-Length`, chunked, or until the connection closes. One decoder
//! for both directions: request bodies from clients (server.rs) and
//! response bodies from upstreams (client.rs), so both are framed by the
//! same strict rules.
//!
//! Chunk-size lines accept hex digits and well-formed extensions only,
//! ended by CRLF: a bare LF, a sign, a `0x` prefix or a size that does not
//! fit in 60 bits is refused. Parsers that disagree about such lines are
//! how chunked request smuggling works, so nothing lenient is accepted
//! here. Chunk data must be followed by CRLF; trailer fields are parsed by
//! `httparse` like header fields.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use hyper::body::{Frame, SizeHint};

/// A chunk-size line, extensions included.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
/// A trailer section.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// Trailer fields in one section.
const MAX_TRAILER_FIELDS: usize = 32;

/// Where a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// This many bytes are left.
    Length(u64),
    /// Chunked, at this point of a chunk.
    Chunked(Chunked),
    /// Until the peer closes (responses only).
    Close,
    /// The body has ended.
    Done,
}

/// The parts of a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// The trailer section, ended by an empty line.
    Trailers,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A data or trailers frame.
    Frame(Frame<Bytes>),
    /// The body has ended (no trailers).
    End,
    /// More bytes are needed.
    More,
}

impl Decoder {
    /// A chunked body, from its first chunk-size line.
    pub(crate) fn chunked() -> Self {
        Decoder::Chunked(Chunked::Size)
    }

    /// A body of `n` bytes.
    pub(crate) fn length(n: u64) -> Self {
        if n == 0 {
            Decoder::Done
        } else {
            Decoder::Length(n)
        }
    }

    /// Takes the next frame off the front of `buf`. Data frames share
    /// `buf`'s memory. After `End` or a trailers frame the decoder is
    /// [`Decoder::Done`]; bytes beyond the body stay in `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(left) | Decoder::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    *self = match *self {
                        Decoder::Length(_) if left == 0 => Decoder::Done,
                        Decoder::Length(_) => Decoder::Length(left),
                        _ if left == 0 => Decoder::Chunked(Chunked::DataEnd),
                        _ => Decoder::Chunked(Chunked::Data(left)),
                    };
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                Decoder::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Frame(Frame::data(buf.split().freeze())));
                }
                Decoder::Chunked(Chunked::Size) => match chunk_size(buf)? {
                    Some((line, size)) => {
                        buf.advance(line);
                        *self = if size == 0 {
                            Decoder::Chunked(Chunked::Trailers)
                        } else {
                            Decoder::Chunked(Chunked::Data(size))
                        };
                    }
                    None if buf.len() > MAX_CHUNK_LINE => return Err("chunk-size line too long"),
                    None => return Ok(Decoded::More),
                },
                Decoder::Chunked(Chunked::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(Chunked::Size);
                }
                Decoder::Chunked(Chunked::Trailers) => match trailers(buf)? {
                    Some(fields) => {
                        *self = Decoder::Done;
                        if fields.is_empty() {
                            return Ok(Decoded::End);
                        }
                        return Ok(Decoded::Frame(Frame::trailers(fields)));
                    }
                    None if buf.len() > MAX_TRAILERS => return Err("trailer section too large"),
                    None => return Ok(Decoded::More),
                },
            }
        }
    }

    /// The peer closed the connection: the end of a body delimited by the
    /// close (`true`), or a body cut short (`false`).
    pub(crate) fn closed(&mut self) -> bool {
        let whole = matches!(self, Decoder::Close | Decoder::Done);
        *self = Decoder::Done;
        whole
    }

    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// What is known of the body's remaining length.
    pub(crate) fn size_hint(&self) -> SizeHint {
        match self {
            Decoder::Length(n) => SizeHint::with_exact(*n),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A chunk-size line at the start of `buf`: its length with CRLF and the
/// size. Strict (RFC 9112 §7.1): hex digits, then optional extensions of
/// visible characters, spaces and tabs; no sign, no bare LF.
pub(crate) fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let Some(cr) = buf.iter().position(|b| *b == b'\r') else {
        if buf.contains(&b'\n') {
            return Err("bare LF in chunk-size line");
        }
        return Ok(None);
    };
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err("bare CR in chunk-size line"),
    }
    let line = &buf[..cr];
    if line.contains(&b'\n') {
        return Err("bare LF in chunk-size line");
    }
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (hex, rest) = line.split_at(digits);
    if hex.is_empty() || hex.len() > 15 {
        return Err("invalid chunk size");
    }
    let ext = rest.trim_ascii_start();
    // Whitespace may follow the digits (some servers pad them); anything
    // else must start an extension.
    if !(ext.is_empty() || ext[0] == b';') {
        return Err("invalid chunk size");
    }
    if ext
        .iter()
        .any(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t' || *b >= 0x80))
    {
        return Err("invalid chunk extension");
    }
    let size = hex
        .iter()
        .try_fold(0u64, |n, d| {
            let d = (*d as char).to_digit(16)?;
            n.checked_mul(16)?.checked_add(u64::from(d))
        })
        .ok_or("invalid chunk size")?;
    Ok(Some((cr + 2, size)))
}

/// The trailer section at the start of `buf`, consumed; `None` while it is
/// incomplete.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, &'static str> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let (len, map) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| "invalid trailer name")?;
                let value =
                    HeaderValue::from_bytes(field.value).map_err(|_| "invalid trailer value")?;
                map.append(name, value);
            }
            (len, map)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed trailer section"),
    };
    buf.advance(len);
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded body, its trailers, and what was left after it.
    type Run = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn run(mut decoder: Decoder, wire: &[u8], step: usize) -> Result<Run, &'static str> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Frame(f) => match f.into_data() {
                    Ok(d) => body.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Decoded::End => break,
                Decoded::More if fed == wire.len() => return Err("truncated"),
                Decoded::More => {
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
        buf.extend_from_slice(&wire[fed..]);
        Ok((body, trailers, buf.to_vec()))
    }

    #[test]
    fn chunked_bodies_whatever_the_read_sizes() {
        let wire = b"5;name=\"v\"\r\nhello\r\n6 \r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (body, trailers, rest) = run(Decoder::chunked(), wire, step).expect("valid");
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
            assert_eq!(rest, b"NEXT", "step {step}");
        }
        let (body, trailers, rest) = run(Decoder::chunked(), b"0\r\n\r\nX", 1).expect("empty");
        assert!(body.is_empty() && trailers.is_none());
        assert_eq!(rest, b"X");
    }

    #[test]
    fn lengths_stop_at_the_length() {
        let (body, _, rest) = run(Decoder::length(5), b"helloGET", 2).expect("valid");
        assert_eq!(body, b"hello");
        assert_eq!(rest, b"GET");
        assert!(Decoder::length(0).is_done());
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\nBad Trailer: x\r\n\r\n",
            b"zz\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ] {
            let shown = String::from_utf8_lossy(bad);
            assert!(
                run(Decoder::chunked(), bad, 64).is_err(),
                "accepted {shown:?}"
            );
            assert!(
                run(Decoder::chunked(), bad, 1).is_err(),
                "{shown:?} by bytes"
            );
        }
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a\r\n").ok().flatten(), Some((4, 26)));
        assert_eq!(
            chunk_size(b"1A;x=\"y z\"\r\nrest").ok().flatten(),
            Some((12, 26))
        );
        assert_eq!(chunk_size(b"0 ;x\r\n").ok().flatten(), Some((6, 0)));
        assert_eq!(chunk_size(b"1a").ok().flatten(), None, "incomplete");
        assert_eq!(chunk_size(b"1a\r").ok().flatten(), None, "incomplete");
        for bad in [
            &b"\r\n"[..],
            b"+1\r\n",
            b"-1\r\n",
            b"0x1\r\n",
            b"1 2\r\n",
            b"1\n",
            b"1\rx\n",
            b"1;\x01\r\n",
            b"1000000000000000\r\n",
        ] {
            assert!(chunk_size(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
