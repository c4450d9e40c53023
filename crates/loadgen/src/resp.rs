//! Minimal RESP2 (REdis Serialization Protocol) for the load generator:
//! [`encode_command`] writes a command as an array of bulk strings
//! (`*3\r\n$3\r\nSET\r\n...`), and [`parse`] decodes one reply — simple
//! string `+`, error `-`, integer `:`, bulk string `$` (including the null
//! bulk `$-1`) and array `*` (nested, including the null array) — from the
//! front of a byte buffer. The parser never trusts the network: a reply that
//! is not complete yet is `Ok(None)` (read more and call again), anything that
//! is not valid RESP is a [`RespError`], and lengths, line sizes and nesting
//! are bounded so a confused or hostile peer cannot make it allocate without
//! limit. Only what the load generator needs is here; RESP3 types are
//! rejected as protocol errors (we never send `HELLO 3`).

/// Longest simple-string / error / integer / length line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted (redis's own `proto-max-bulk-len` default).
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Most elements accepted in one array.
const MAX_ARRAY: i64 = 1024 * 1024;
/// Deepest array nesting accepted.
const MAX_DEPTH: usize = 16;

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`, ...
    Simple(String),
    /// `-ERR ...`: the server refused the command.
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$n` followed by n bytes; `None` for the null bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` followed by n replies; `None` for the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// The bytes received are not a valid RESP reply; the stream cannot be
/// resynchronised after this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("unknown RESP type byte 0x{0:02x}")]
    UnknownType(u8),
    #[error("RESP line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("RESP line is not terminated by CRLF")]
    BadLineEnd,
    #[error("RESP line is not valid UTF-8")]
    NotUtf8,
    #[error("invalid RESP integer {0:?}")]
    BadInteger(String),
    #[error("invalid RESP length {0}")]
    BadLength(i64),
    #[error("RESP bulk string not followed by CRLF")]
    BadBulkEnd,
    #[error("RESP arrays nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Appends `args` to `out` as a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes the reply at the front of `buf`. Returns the reply and the number
/// of bytes it took, `Ok(None)` if `buf` holds only part of a reply, or an
/// error if the bytes cannot be RESP.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, after_line)) = line_at(buf, pos + 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(utf8(line)?), after_line))),
        b'-' => Ok(Some((Reply::Error(utf8(line)?), after_line))),
        b':' => Ok(Some((Reply::Integer(integer(line)?), after_line))),
        b'$' => {
            let len = integer(line)?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), after_line)));
            }
            if !(0..=MAX_BULK).contains(&len) {
                return Err(RespError::BadLength(len));
            }
            // In range 0..=MAX_BULK, so the conversion cannot truncate.
            let len = len as usize;
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BadBulkEnd);
            }
            Ok(Some((
                Reply::Bulk(Some(buf[after_line..end].to_vec())),
                end + 2,
            )))
        }
        b'*' => {
            let len = integer(line)?;
            if len == -1 {
                return Ok(Some((Reply::Array(None), after_line)));
            }
            if !(0..=MAX_ARRAY).contains(&len) {
                return Err(RespError::BadLength(len));
            }
            if depth >= MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            let mut items = Vec::new();
            let mut at = after_line;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(RespError::UnknownType(other)),
    }
}

/// The CRLF-terminated line starting at `start` (without the CRLF) and the
/// position just after it, or `None` if the CRLF has not arrived yet.
fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            if nl == 0 || window[nl - 1] != b'\r' {
                return Err(RespError::BadLineEnd);
            }
            Ok(Some((&window[..nl - 1], start + nl + 1)))
        }
        None if rest.len() > MAX_LINE + 1 => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

fn utf8(line: &[u8]) -> Result<String, RespError> {
    String::from_utf8(line.to_vec()).map_err(|_| RespError::NotUtf8)
}

fn integer(line: &[u8]) -> Result<i64, RespError> {
    let text = std::str::from_utf8(line).map_err(|_| RespError::NotUtf8)?;
    text.parse::<i64>()
        .map_err(|_| RespError::BadInteger(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len(), "whole input consumed");
        reply
    }

    #[test]
    fn encodes_set() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k:1", b"hello"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk:1\r\n$5\r\nhello\r\n");
        let mut empty = Vec::new();
        encode_command(&mut empty, &[b"GET", b""]);
        assert_eq!(empty, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(one(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(
            one(b"-ERR wrong type\r\n"),
            Reply::Error("ERR wrong type".into())
        );
        assert_eq!(one(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(
            one(b"$5\r\nhe\r\no\r\n"),
            Reply::Bulk(Some(b"he\r\no".to_vec()))
        );
        assert_eq!(one(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
        assert_eq!(one(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(one(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            one(b"*3\r\n:1\r\n$1\r\nx\r\n*1\r\n+y\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Array(Some(vec![Reply::Simple("y".into())])),
            ]))
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let full: &[u8] = b"*2\r\n$3\r\nabc\r\n-ERR x\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        assert!(parse(full).unwrap().is_some());
    }

    #[test]
    fn consumes_only_the_first_reply() {
        let buf = b"+OK\r\n+OK\r\n:7";
        let (reply, used) = parse(buf).unwrap().unwrap();
        assert_eq!(reply, Reply::Simple("OK".into()));
        assert_eq!(used, 5);
        let (_, used2) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!(used + used2, 10);
        assert_eq!(parse(&buf[10..]), Ok(None));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"!oops\r\n"), Err(RespError::UnknownType(b'!')));
        assert_eq!(parse(b"+OK\n"), Err(RespError::BadLineEnd));
        assert_eq!(parse(b":12x\r\n"), Err(RespError::BadInteger("12x".into())));
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BadLength(-2)));
        assert_eq!(
            parse(b"$99999999999\r\n"),
            Err(RespError::BadLength(99999999999))
        );
        assert_eq!(parse(b"*-5\r\n"), Err(RespError::BadLength(-5)));
        assert_eq!(parse(b"$3\r\nabcXY"), Err(RespError::BadBulkEnd));
        assert_eq!(parse(b"+\xff\r\n"), Err(RespError::NotUtf8));
        let nested: Vec<u8> = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&nested), Err(RespError::TooDeep));
    }

    #[test]
    fn bounds_a_line_that_never_ends() {
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(parse(&long), Ok(None), "could still end");
        long.extend_from_slice(b"aa");
        assert_eq!(parse(&long), Err(RespError::LineTooLong));
    }
}
