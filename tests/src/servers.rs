//! Tiny TCP and UDP servers that answer every line or datagram with their own name, and the
//! client calls that talk to them. Servers stop when their handle is dropped.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::netns::Netns;

const POLL: Duration = Duration::from_millis(5);
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Server {
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Serves TCP and UDP on `port` inside `ns`, answering `name\n`.
pub fn serve(ns: &Netns, port: u16, name: &str) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp, udp) = ns.enter(|| {
        let t = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
        let u = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
        (t, u)
    });
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (s1, n1) = (stop.clone(), name.to_string());
    thread::spawn(move || {
        while !s1.load(Ordering::SeqCst) {
            match tcp.accept() {
                Ok((conn, _)) => {
                    let (s, n) = (s1.clone(), n1.clone());
                    thread::spawn(move || serve_conn(conn, &n, &s));
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    });
    let (s2, n2) = (stop.clone(), name.to_string());
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !s2.load(Ordering::SeqCst) {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{n2}\n").as_bytes(), from);
            }
        }
    });
    Server { stop }
}

fn serve_conn(conn: TcpStream, name: &str, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if w.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(_) => continue,
        }
    }
}

/// A TCP connection made from inside a namespace, kept open for several exchanges.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    pub fn open(ns: &Netns, src: Option<Ipv4Addr>, dst: SocketAddrV4) -> std::io::Result<Conn> {
        let s = ns.enter(|| connect(src, dst))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            w: s.try_clone()?,
            r: BufReader::new(s),
        })
    }

    /// Sends a line, returns the answer (the backend's name).
    pub fn ask(&mut self) -> std::io::Result<String> {
        self.w.write_all(b"hi\n")?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }

    pub fn peer(&self) -> SocketAddr {
        self.w.peer_addr().unwrap()
    }
}

fn connect(src: Option<Ipv4Addr>, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    match src {
        None => TcpStream::connect_timeout(&dst.into(), IO_TIMEOUT),
        Some(a) => {
            // std has no bind-before-connect; do it with libc.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
                let local = sa(a, 0);
                let remote = sa(*dst.ip(), dst.port());
                if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0
                    || libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0
                {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(e);
                }
                use std::os::fd::FromRawFd;
                Ok(TcpStream::from_raw_fd(fd))
            }
        }
    }
}

/// One TCP request on a new connection: which backend answered.
pub fn tcp_ask(ns: &Netns, src: Option<Ipv4Addr>, dst: SocketAddrV4) -> String {
    let mut c = Conn::open(ns, src, dst).unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let a = c.ask().unwrap_or_else(|e| panic!("ask {dst}: {e}"));
    drop(c);
    a
}

/// One UDP datagram from a new socket: the answer and the address it came from.
pub fn udp_ask(ns: &Netns, src: Option<Ipv4Addr>, dst: SocketAddrV4) -> (String, SocketAddr) {
    let s = ns
        .enter(|| UdpSocket::bind((src.unwrap_or(Ipv4Addr::UNSPECIFIED), 0)))
        .unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.send_to(b"hi\n", dst).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = s
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("udp {dst}: {e}"));
    (String::from_utf8_lossy(&buf[..n]).trim().to_string(), from)
}

/// Reads whatever is left (for tests that expect a closed connection).
pub fn drain(mut s: TcpStream) -> std::io::Result<usize> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)
}

/// Serves bulk transfers on TCP `port` inside `ns`: a client sends an 8-byte big-endian
/// length, then uploads until it shuts its side down; the server answers with the number of
/// bytes uploaded (8 bytes) and then that many bytes of `pattern` back.
pub fn serve_bulk(ns: &Netns, port: u16) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let tcp = ns.enter(|| TcpListener::bind(("0.0.0.0", port)).expect("bind tcp"));
    tcp.set_nonblocking(true).unwrap();
    let s1 = stop.clone();
    thread::spawn(move || {
        while !s1.load(Ordering::SeqCst) {
            match tcp.accept() {
                Ok((conn, _)) => {
                    thread::spawn(move || {
                        let _ = serve_bulk_conn(conn);
                    });
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    });
    Server { stop }
}

/// Byte `i` of every bulk transfer.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(131) >> 3) as u8
}

fn serve_bulk_conn(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hdr = [0u8; 8];
    conn.read_exact(&mut hdr)?;
    let back = u64::from_be_bytes(hdr);
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    conn.write_all(&got.to_be_bytes())?;
    send_pattern(&mut conn, back)
}

fn send_pattern(w: &mut impl Write, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut sent = 0u64;
    while sent < len {
        let n = ((len - sent) as usize).min(buf.len());
        for (j, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(sent + j as u64);
        }
        w.write_all(&buf[..n])?;
        sent += n as u64;
    }
    Ok(())
}

/// Uploads `up` bytes to a bulk server and downloads `down` bytes back, checking every byte.
/// Returns (bytes the server counted, bytes downloaded intact).
pub fn bulk_transfer(
    ns: &Netns,
    dst: SocketAddrV4,
    up: u64,
    down: u64,
    timeout: Duration,
) -> std::io::Result<(u64, u64)> {
    let mut s = ns.enter(|| TcpStream::connect_timeout(&dst.into(), IO_TIMEOUT))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&down.to_be_bytes())?;
    send_pattern(&mut s, up)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut hdr = [0u8; 8];
    s.read_exact(&mut hdr)?;
    let counted = u64::from_be_bytes(hdr);
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for (j, b) in buf[..n].iter().enumerate() {
            if *b != pattern(got + j as u64) {
                return Err(std::io::Error::other(format!(
                    "byte {} of the download differs",
                    got + j as u64
                )));
            }
        }
        got += n as u64;
    }
    Ok((counted, got))
}

/// TCP segments this namespace's stack dropped for a bad checksum (Tcp InCsumErrors).
pub fn tcp_csum_errors(ns: &Netns) -> u64 {
    let snmp = ns.exec("cat", &["/proc/net/snmp"]);
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or(""), tcp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InCsumErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Sends `count` TCP SYNs to `dst` from `ns` through a raw socket, from spoofed sources
/// 10.10.<hi>.<lo> (addresses inside the test's client subnet that no host has, so their
/// SYN-ACKs go nowhere and the connections stay half-open, as in a real flood) and varying
/// ports. Returns how many were sent.
pub fn syn_flood(ns: &Netns, dst: SocketAddrV4, count: u32) -> u32 {
    use crate::packet::{Pkt, SYN};
    let fd = ns.enter(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) });
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let mut sent = 0;
    for i in 0..count {
        let src = format!("10.10.0.{}", 100 + (i % 100));
        let sport = 1024 + (i / 100) as u16;
        let frame = Pkt::tcp((&src, sport), (&dst.ip().to_string(), dst.port()), SYN).build();
        let ip = &frame[14..];
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let n = unsafe {
            libc::sendto(
                fd,
                ip.as_ptr() as *const libc::c_void,
                ip.len(),
                0,
                &to as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n > 0 {
            sent += 1;
        }
    }
    unsafe { libc::close(fd) };
    sent
}
