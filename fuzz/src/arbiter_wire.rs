//! The arbiter protocol's frames (`ftvm_storage::arbiter::wire`): requests
//! as the server in `ftvm storage` reads them, replies as the FT processes
//! and `ftvm arbiter` read them. A decoded message must re-encode to itself.

use ftvm_storage::arbiter::wire::{
    decode_frame, parse_header, Reply, Request, HEADER_LEN, MAX_REPLY_BODY, MAX_REQUEST_BODY,
};

pub fn run(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    if let Some(h) = frame.get(..HEADER_LEN) {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(h);
        let _ = parse_header(&head, MAX_REQUEST_BODY);
    }
    let max = if sel & 1 == 0 {
        MAX_REQUEST_BODY
    } else {
        MAX_REPLY_BODY
    };
    let Ok((kind, body)) = decode_frame(frame, max) else {
        return;
    };
    if let Ok(req) = Request::decode(kind, body) {
        let enc = req.encode();
        let again = decode_frame(&enc, MAX_REQUEST_BODY)
            .ok()
            .and_then(|(k, b)| Request::decode(k, b).ok());
        assert_eq!(
            again.as_ref(),
            Some(&req),
            "request changed through encode/decode"
        );
    }
    if let Ok(rep) = Reply::decode(kind, body) {
        let enc = rep.encode();
        let again = decode_frame(&enc, MAX_REPLY_BODY)
            .ok()
            .and_then(|(k, b)| Reply::decode(k, b).ok());
        assert_eq!(
            again.as_ref(),
            Some(&rep),
            "reply changed through encode/decode"
        );
    }
}
