//! Routing and limits of the muxer, with host streams only (the packet path
//! through queues is tested in the worker).

use std::io::{Read, Write};
use std::sync::mpsc;

use super::*;
use crate::devices::virtio::vsock::defs::{SHUTDOWN_RCV, SHUTDOWN_SEND};

fn req(src_port: u32, dst_port: u32, op: u16) -> Header {
    crate::devices::virtio::vsock::testutil::from_guest(op, src_port, dst_port)
}

fn drain(m: &mut Muxer) -> Vec<Header> {
    let mut buf = Vec::new();
    std::iter::from_fn(|| m.recv_pkt(4096, &mut buf)).collect()
}

#[test]
fn listeners_route_and_unlisten() {
    let mut m = Muxer::new(3, None).unwrap();
    let (sink, incoming) = mpsc::sync_channel(1);
    m.listen(80, 7, sink).unwrap();
    let (s2, _i2) = mpsc::sync_channel(1);
    assert!(matches!(
        m.listen(80, 8, s2),
        Err(VsockError::PortInUse(80))
    ));
    m.send_pkt(&req(1000, 80, op::REQUEST), &[]);
    let ops: Vec<u16> = drain(&mut m).iter().map(|h| h.op).collect();
    assert_eq!(ops, vec![op::RESPONSE]);
    assert!(incoming.try_recv().is_ok());
    // The backlog of 1 is free again.
    m.send_pkt(&req(1001, 80, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RESPONSE);
    // Backlog full (nobody accepted): RST.
    m.send_pkt(&req(1002, 80, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
    // A duplicate REQUEST on a live connection resets it.
    m.send_pkt(&req(1000, 80, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
    // Unlisten with the wrong id does nothing; the right id removes it.
    m.unlisten(80, 8);
    drop(incoming.try_recv());
    m.send_pkt(&req(1003, 80, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RESPONSE);
    m.unlisten(80, 7);
    m.send_pkt(&req(1004, 80, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
    // A dropped listener behaves as none.
    let (sink, incoming) = mpsc::sync_channel(1);
    m.listen(81, 9, sink).unwrap();
    drop(incoming);
    m.send_pkt(&req(1005, 81, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
}

#[test]
fn connection_limit_and_reset() {
    let mut m = Muxer::new(3, None).unwrap();
    let (sink, incoming) = mpsc::sync_channel(MAX_CONNECTIONS + 8);
    m.listen(5, 1, sink).unwrap();
    for p in 0..MAX_CONNECTIONS as u32 {
        m.send_pkt(&req(p, 5, op::REQUEST), &[]);
    }
    assert_eq!(m.connection_count(), MAX_CONNECTIONS);
    drain(&mut m);
    m.send_pkt(&req(99_999, 5, op::REQUEST), &[]);
    let out = drain(&mut m);
    assert_eq!(
        (out.len(), out[0].op, out[0].dst_port),
        (1, op::RST, 99_999)
    );
    let (reply, rx) = mpsc::sync_channel(1);
    m.connect(1, Duration::from_secs(1), reply);
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(VsockError::TooManyConnections(_))
    ));
    // Reset drops everything; host ends see EOF.
    m.reset();
    assert_eq!(m.connection_count(), 0);
    assert!(!m.has_pending_rx());
    let mut s = incoming.try_recv().unwrap();
    assert_eq!(s.read(&mut [0u8; 4]).unwrap(), 0);
}

#[test]
fn rst_queue_is_bounded() {
    let mut m = Muxer::new(3, None).unwrap();
    for p in 0..(MAX_PENDING_RSTS as u32 + 100) {
        m.send_pkt(&req(p, 5, op::RW), &[]);
    }
    assert_eq!(drain(&mut m).len(), MAX_PENDING_RSTS);
}

#[test]
fn hybrid_socket_both_ways() {
    let dir = std::env::temp_dir().join(format!("ember-mux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.sock");
    let mut m = Muxer::new(3, Some(&path)).unwrap();

    // Host-initiated: CONNECT 1024 → REQUEST → RESPONSE → "OK <port>".
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"CONNECT 1024\n").unwrap();
    m.process_events(); // accept
    m.process_events(); // handshake
    let out = drain(&mut m);
    assert_eq!(
        (out.len(), out[0].op, out[0].dst_port),
        (1, op::REQUEST, 1024)
    );
    let local = out[0].src_port;
    m.send_pkt(&req(1024, local, op::RESPONSE), &[]);
    let mut line = [0u8; 64];
    let n = c.read(&mut line).unwrap();
    assert_eq!(
        std::str::from_utf8(&line[..n]).unwrap(),
        format!("OK {local}\n")
    );
    let mut data = req(1024, local, op::RW);
    data.len = 3;
    m.send_pkt(&data, b"abc");
    let mut b = [0u8; 3];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");

    // Guest-initiated to port 52: `<path>_52`.
    let mut side = path.clone().into_os_string();
    side.push("_52");
    let l = std::os::unix::net::UnixListener::bind(&side).unwrap();
    m.send_pkt(&req(3000, 52, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RESPONSE);
    let (mut s, _) = l.accept().unwrap();
    s.write_all(b"hi").unwrap();
    m.process_events();
    let mut buf = Vec::new();
    let h = m.recv_pkt(4096, &mut buf).unwrap();
    assert_eq!((h.op, &buf[..]), (op::RW, &b"hi"[..]));
    let mut sd = req(3000, 52, op::SHUTDOWN);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    m.send_pkt(&sd, &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
    // Nobody at `<path>_53`: RST.
    m.send_pkt(&req(3001, 53, op::REQUEST), &[]);
    assert_eq!(drain(&mut m)[0].op, op::RST);
    drop(m);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
