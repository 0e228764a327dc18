//! Feed arbitrary bytes to every decoding entry point of the protocol:
//! whole payloads (requests, responses, hellos), the streaming frame reader
//! and the incremental frame splitter. None may panic or allocate beyond
//! the frame limit.
#![no_main]

use std::io::Cursor;

use embervm_protocol::{
    check_hello, decode, read_frame, FrameDecoder, Request, Response, Role,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Request>(data);
    let _ = decode::<Response>(data);
    let _ = check_hello(data, "fuzz", Role::Agent);
    let _ = check_hello(data, "fuzz", Role::Host);
    let mut cur = Cursor::new(data);
    while let Ok(Some(_)) = read_frame::<_, Request>(&mut cur) {}
    let mut d = FrameDecoder::new();
    for piece in data.chunks(7) {
        d.push(piece);
        while let Ok(Some(p)) = d.next_payload() {
            let _ = decode::<Response>(&p);
        }
    }
});
