//! State transitions and credit math of one connection, over a real
//! socketpair standing in for the host stream.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;

const ADDR: Addr = Addr {
    local_cid: 2,
    local_port: 1 << 30,
    peer_cid: 3,
    peer_port: 1024,
};

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (a, b)
}

fn guest(op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: 3,
        dst_cid: 2,
        src_port: ADDR.peer_port,
        dst_port: ADDR.local_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

fn established() -> (Connection, UnixStream) {
    let (ours, host) = pair();
    let req = guest(op::REQUEST, 0, 4096, 0);
    let mut c = Connection::new_peer_init(ADDR, ours, &req);
    let mut buf = Vec::new();
    let h = c.recv_pkt(4096, &mut buf).unwrap();
    assert_eq!(h.op, op::RESPONSE);
    assert_eq!((h.src_port, h.dst_port, h.dst_cid), (1 << 30, 1024, 3));
    assert_eq!(h.buf_alloc, CONN_TX_BUF_SIZE);
    (c, host)
}

#[test]
fn host_initiated_handshake() {
    let (ours, _host) = pair();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut c = Connection::new_local_init(ADDR, ours, deadline);
    assert!(c.has_pending_rx());
    let mut buf = Vec::new();
    assert_eq!(c.recv_pkt(100, &mut buf).unwrap().op, op::REQUEST);
    assert!(!c.has_pending_rx());
    c.send_pkt(&guest(op::RESPONSE, 0, 1000, 0), &[]);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.peer_credit(), 1000);

    // A refused one.
    let (ours, _host) = pair();
    let mut c = Connection::new_local_init(ADDR, ours, deadline);
    c.send_pkt(&guest(op::RST, 0, 0, 0), &[]);
    assert_eq!(c.state(), State::Closed { rst: false });
    // Anything but RESPONSE/RST while connecting resets.
    let (ours, _host) = pair();
    let mut c = Connection::new_local_init(ADDR, ours, deadline);
    c.send_pkt(&guest(op::RW, 1, 0, 0), b"x");
    assert_eq!(c.state(), State::Closed { rst: true });
}

#[test]
fn host_to_guest_respects_credit() {
    let (mut c, mut host) = established();
    host.write_all(&[7u8; 10_000]).unwrap();
    c.notify_readable();
    let mut buf = Vec::new();
    // Credit 4096, buffer 3000: first packet 3000.
    let h = c.recv_pkt(3000, &mut buf).unwrap();
    assert_eq!((h.op, h.len, buf.len()), (op::RW, 3000, 3000));
    let h = c.recv_pkt(3000, &mut buf).unwrap();
    assert_eq!(h.len, 1096);
    assert_eq!(c.peer_credit(), 0);
    // Out of credit: one CREDIT_REQUEST, then nothing.
    assert_eq!(c.recv_pkt(3000, &mut buf).unwrap().op, op::CREDIT_REQUEST);
    assert!(!c.has_pending_rx());
    assert!(c.recv_pkt(3000, &mut buf).is_none());
    // The guest read 4096 bytes: credit is back.
    c.send_pkt(&guest(op::CREDIT_UPDATE, 0, 4096, 4096), &[]);
    assert!(c.has_pending_rx());
    let mut total = 0;
    while let Some(h) = c.recv_pkt(65536, &mut buf) {
        assert_eq!(h.op, op::RW);
        total += h.len;
        c.send_pkt(&guest(op::CREDIT_UPDATE, 0, 4096, 4096 + total), &[]);
    }
    assert_eq!(total, 10_000 - 4096);
    // Nothing more to read: WouldBlock cleared readability.
    assert!(!c.has_pending_rx());
}

#[test]
fn guest_to_host_buffers_and_updates_credit() {
    let (mut c, mut host) = established();
    let chunk = vec![1u8; 60_000];
    // Fill the host socket until it pushes back; the rest is buffered.
    let mut sent = 0usize;
    while c.tx_buffered() == 0 {
        c.send_pkt(&guest(op::RW, chunk.len() as u32, 4096, 0), &chunk);
        sent += chunk.len();
    }
    assert_eq!(c.state(), State::Established);
    // Go past the credit we advertised: the guest broke the rules.
    while c.state() == State::Established {
        c.send_pkt(&guest(op::RW, chunk.len() as u32, 4096, 0), &chunk);
        sent += chunk.len();
        assert!(c.tx_buffered() <= CONN_TX_BUF_SIZE as usize);
    }
    assert_eq!(c.state(), State::Closed { rst: true });
    assert!(sent > CONN_TX_BUF_SIZE as usize);
    assert!(host.read(&mut [0u8; 16]).unwrap() > 0);
}

#[test]
fn slow_host_reader_flushes_and_sends_credit_update() {
    let (mut c, mut host) = established();
    let chunk = vec![2u8; 65536];
    let mut sent = 0u32;
    // Send exactly our advertised credit in total.
    while sent < CONN_TX_BUF_SIZE {
        c.send_pkt(&guest(op::RW, 65536, 4096, 0), &chunk);
        sent += 65536;
    }
    assert_eq!(c.state(), State::Established);
    assert!(c.tx_buffered() > 0);
    // The host drains its end; we flush on writability.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut pkt = Vec::new();
    let mut saw_update = false;
    while got < sent as usize {
        got += host.read(&mut buf).unwrap();
        c.notify_writable();
        while let Some(h) = c.recv_pkt(4096, &mut pkt) {
            if h.op == op::CREDIT_UPDATE {
                saw_update = true;
                assert!(h.fwd_cnt > 0);
            }
        }
    }
    assert_eq!(c.tx_buffered(), 0);
    assert!(saw_update, "guest would stall without a credit update");
}

#[test]
fn credit_request_is_answered() {
    let (mut c, _host) = established();
    c.send_pkt(&guest(op::CREDIT_REQUEST, 0, 4096, 0), &[]);
    let mut buf = Vec::new();
    let h = c.recv_pkt(100, &mut buf).unwrap();
    assert_eq!((h.op, h.buf_alloc), (op::CREDIT_UPDATE, CONN_TX_BUF_SIZE));
}

#[test]
fn guest_full_shutdown_flushes_then_resets() {
    let (mut c, mut host) = established();
    c.send_pkt(&guest(op::RW, 5, 4096, 0), b"hello");
    let mut sd = guest(op::SHUTDOWN, 0, 4096, 0);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    c.send_pkt(&sd, &[]);
    assert_eq!(c.state(), State::Closed { rst: true });
    assert_eq!(c.rst_header().op, op::RST);
    drop(c);
    let mut s = String::new();
    host.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
}

#[test]
fn half_close_both_ways() {
    let (mut c, mut host) = established();
    // Guest stops sending: host sees EOF, connection stays.
    let mut sd = guest(op::SHUTDOWN, 0, 4096, 0);
    sd.flags = SHUTDOWN_SEND;
    c.send_pkt(&sd, &[]);
    assert_eq!(c.state(), State::Established);
    let mut s = Vec::new();
    host.read_to_end(&mut s).unwrap();
    assert!(s.is_empty());
    // Host answers and closes its side: data, SHUTDOWN(SEND), then RST.
    host.write_all(b"bye").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    c.notify_readable();
    let mut buf = Vec::new();
    let h = c.recv_pkt(100, &mut buf).unwrap();
    assert_eq!((h.op, &buf[..]), (op::RW, &b"bye"[..]));
    let h = c.recv_pkt(100, &mut buf).unwrap();
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    assert_eq!(c.state(), State::Closed { rst: true });
}

#[test]
fn guest_rst_and_unknown_ops() {
    let (mut c, _host) = established();
    c.send_pkt(&guest(op::RST, 0, 0, 0), &[]);
    assert_eq!(c.state(), State::Closed { rst: false });
    let (mut c, _host) = established();
    c.send_pkt(&guest(0x55, 0, 0, 0), &[]);
    assert_eq!(c.state(), State::Closed { rst: true });
    let (mut c, _host) = established();
    c.send_pkt(&guest(op::REQUEST, 0, 0, 0), &[]);
    assert_eq!(c.state(), State::Closed { rst: true });
}

#[test]
fn host_gone_resets_on_write() {
    let (mut c, host) = established();
    drop(host);
    c.send_pkt(&guest(op::RW, 3, 4096, 0), b"abc");
    assert_eq!(c.state(), State::Closed { rst: true });
}

#[test]
fn credit_math_wraps() {
    let (mut c, _host) = established();
    c.rx_cnt = Wrapping(u32::MAX - 10);
    c.send_pkt(&guest(op::CREDIT_UPDATE, 0, 100, u32::MAX - 20), &[]);
    assert_eq!(c.peer_credit(), 90);
    c.rx_cnt += Wrapping(30); // wrapped past zero
    assert_eq!(c.peer_credit(), 60);
    // A guest claiming to have consumed more than we sent gets no credit.
    c.send_pkt(&guest(op::CREDIT_UPDATE, 0, 100, 1000), &[]);
    assert_eq!(c.peer_credit(), 0);
}
