//! The traffic of the end-to-end runs: a UDP generator that writes whole Ethernet frames on
//! the client's veth (AF_PACKET with PACKET_QDISC_BYPASS, sendmmsg batches: no socket or
//! routing work on the client beyond the device transmit, any flow mix), UDP sinks that count
//! datagrams received by a socket (recvmmsg), and TCP streams to TCP sinks that count bytes.
//! Receivers poll (non-blocking reads, 1 ms sleeps when empty) rather than being woken per
//! packet.
//! No thread is pinned: on a shared machine the scheduler puts them where there is room.
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::frame::{self, Flow, FrameOpts};
use super::{BenchResult, Ctx};
use crate::netns::Netns;
use crate::packet::UDP;

const SOL_PACKET: libc::c_int = 263;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// UDP payload: 18 bytes make a 60-byte frame, the shortest Ethernet frame (without FCS).
pub const UDP_PAYLOAD: usize = 18;
const BATCH: usize = 32;
/// Receivers drain their sockets without blocking and sleep this long when they are empty: a
/// wake-up per packet would cost more than the whole path being measured.
const POLL: Duration = Duration::from_millis(1);

/// A counter fed by receiver threads; they stop when it is dropped.
pub struct Sink {
    pub count: Arc<AtomicU64>,
    /// TCP: connections accepted.
    pub accepted: Arc<AtomicU64>,
    /// TCP: close every connection as soon as it is accepted instead of reading it (the
    /// connection-rate pattern: no reader thread per connection).
    pub close_on_accept: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Sink {
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn set_int_opt(fd: i32, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> BenchResult<()> {
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "setsockopt({level}, {name}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Counts UDP datagrams arriving on `port` in `ns` (any local address).
pub fn udp_sink(ns: &Netns, port: u16) -> BenchResult<Sink> {
    let sock = ns
        .enter(|| UdpSocket::bind(("0.0.0.0", port)))
        .ctx("bind udp sink")?;
    // A deep buffer, so the receiver is not what limits a run.
    set_int_opt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        32 << 20,
    )?;
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    let h = thread::spawn(move || {
        const N: usize = 64;
        let mut bufs = vec![[0u8; 256]; N];
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut _,
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov as *mut _;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let fd = sock.as_raw_fd();
        while !s.load(Ordering::Relaxed) {
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    N as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r > 0 {
                c.fetch_add(r as u64, Ordering::Relaxed);
            }
            if r < N as i32 {
                thread::sleep(POLL);
            }
        }
    });
    Ok(Sink {
        count,
        accepted: Arc::new(AtomicU64::new(0)),
        close_on_accept: Arc::new(AtomicBool::new(false)),
        stop,
        handles: vec![h],
    })
}

/// Accepts TCP connections on `port` in `ns` and counts the bytes read from them.
pub fn tcp_sink(ns: &Netns, port: u16) -> BenchResult<Sink> {
    let l = ns
        .enter(|| TcpListener::bind(("0.0.0.0", port)))
        .ctx("bind tcp sink")?;
    l.set_nonblocking(true).ctx("nonblocking")?;
    // A deep accept queue (listen again: Linux updates the backlog): on a loaded machine the
    // polling accept thread may wait its turn for tens of ms while connections keep coming,
    // and an overflow drops a SYN (a client then waits a whole second to retry it).
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    let count = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let close_on_accept = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    let (acc, close) = (accepted.clone(), close_on_accept.clone());
    let h = thread::spawn(move || {
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok(_) if close.load(Ordering::Relaxed) => {
                    // Dropped here: closed at once.
                    acc.fetch_add(1, Ordering::Relaxed);
                }
                Ok((mut conn, _)) => {
                    acc.fetch_add(1, Ordering::Relaxed);
                    let (c, s) = (c.clone(), s.clone());
                    readers.push(thread::spawn(move || {
                        let _ = conn.set_nonblocking(true);
                        let mut buf = vec![0u8; 256 << 10];
                        while !s.load(Ordering::Relaxed) {
                            match conn.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    c.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    thread::sleep(POLL)
                                }
                                Err(_) => return,
                            }
                        }
                    }));
                    readers.retain(|h| !h.is_finished());
                }
                Err(_) if close.load(Ordering::Relaxed) => thread::sleep(POLL),
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        for r in readers {
            let _ = r.join();
        }
    });
    Ok(Sink {
        count,
        accepted,
        close_on_accept,
        stop,
        handles: vec![h],
    })
}

/// Which flows the UDP generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpFlows {
    /// One 5-tuple.
    One,
    /// This many 5-tuples, in turn.
    Many(u32),
    /// A 5-tuple never sent before on every packet.
    New,
}

/// Where the generator writes and what it addresses.
#[derive(Clone, Debug)]
pub struct UdpSpec {
    pub ifname: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The client's own address (flows One and Many).
    pub client: u32,
    /// Destinations (address, port), host order; flows are spread over them in turn.
    pub targets: Vec<(u32, u16)>,
    pub flows: UdpFlows,
}

/// New flows' clients: 10.10.1.0 + (g / 60000) % 60000, source port 1024 + g % 60000.
fn new_flow_src(g: u64) -> (u32, u16) {
    (
        0x0a0a_0100 + ((g / 60_000) % 60_000) as u32,
        1024 + (g % 60_000) as u16,
    )
}

/// A running UDP generator.
pub struct UdpGen {
    pub sent: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<BenchResult<()>>>,
}

impl UdpGen {
    /// Starts sending from `ns`. `seq` numbers the new flows across the whole run (so they
    /// are never repeated); it is advanced by what this generator sent.
    pub fn start(ns: &Netns, spec: UdpSpec, seq: Arc<AtomicU64>) -> BenchResult<UdpGen> {
        let fd = ns.enter(|| -> BenchResult<OwnedFd> {
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if fd < 0 {
                return Err(format!(
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let ifindex = lb_user::fastpath::ifindex(&spec.ifname).ctx("ifindex")?;
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                return Err(format!(
                    "bind AF_PACKET: {}",
                    std::io::Error::last_os_error()
                ));
            }
            set_int_opt(fd.as_raw_fd(), SOL_PACKET, PACKET_QDISC_BYPASS, 1)?;
            Ok(fd)
        })?;
        let sent = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s_sent, s_err, s_stop) = (sent.clone(), errors.clone(), stop.clone());
        let handle = thread::spawn(move || -> BenchResult<()> {
            let o = FrameOpts {
                src_mac: spec.src_mac,
                dst_mac: spec.dst_mac,
                tcp_flags: 0,
                payload_len: UDP_PAYLOAD,
            };
            let t = &spec.targets;
            let flow = |i: u64, src: (u32, u16)| {
                let (daddr, dport) = t[(i % t.len() as u64) as usize];
                Flow {
                    proto: UDP,
                    saddr: src.0,
                    sport: src.1,
                    daddr,
                    dport,
                }
            };
            // Pre-built frames for fixed flow sets; rebuilt per batch for new flows.
            let fixed: Vec<Vec<u8>> = match spec.flows {
                UdpFlows::One => vec![build(&flow(0, (spec.client, 40_000)), &o)],
                UdpFlows::Many(n) => (0..n as u64)
                    .map(|i| build(&flow(i, (spec.client, 20_000 + (i % 40_000) as u16)), &o))
                    .collect(),
                UdpFlows::New => Vec::new(),
            };
            let mut scratch: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(64)).collect();
            let mut iovs: Vec<libc::iovec> = vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ];
            let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
                .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
                .collect();
            let mut next: usize = 0;
            let fdr = fd.as_raw_fd();
            while !s_stop.load(Ordering::Relaxed) {
                if spec.flows == UdpFlows::New {
                    let g0 = seq.fetch_add(BATCH as u64, Ordering::Relaxed);
                    for (k, buf) in scratch.iter_mut().enumerate() {
                        let g = g0 + k as u64;
                        frame::write(buf, &flow(g, new_flow_src(g)), &o);
                    }
                    for k in 0..BATCH {
                        iovs[k].iov_base = scratch[k].as_ptr() as *mut _;
                        iovs[k].iov_len = scratch[k].len();
                    }
                } else {
                    for iov in iovs.iter_mut() {
                        let f = &fixed[next];
                        iov.iov_base = f.as_ptr() as *mut _;
                        iov.iov_len = f.len();
                        next = (next + 1) % fixed.len();
                    }
                }
                for k in 0..BATCH {
                    msgs[k].msg_hdr.msg_iov = &mut iovs[k] as *mut _;
                    msgs[k].msg_hdr.msg_iovlen = 1;
                }
                let r = unsafe { libc::sendmmsg(fdr, msgs.as_mut_ptr(), BATCH as u32, 0) };
                if r > 0 {
                    s_sent.fetch_add(r as u64, Ordering::Relaxed);
                } else {
                    s_err.fetch_add(1, Ordering::Relaxed);
                    thread::yield_now();
                }
            }
            drop(fd);
            Ok(())
        });
        Ok(UdpGen {
            sent,
            errors,
            stop,
            handle: Some(handle),
        })
    }

    pub fn stop(mut self) -> BenchResult<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| "generator panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for UdpGen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn build(f: &Flow, o: &FrameOpts) -> Vec<u8> {
    let mut b = Vec::new();
    frame::write(&mut b, f, o);
    b
}

/// TCP connections from the client namespace, each written to by its own thread.
pub struct TcpStreams {
    pub mss: u32,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl TcpStreams {
    /// Connects to every target (before any measurement), then starts writing.
    pub fn start(ns: &Netns, targets: &[SocketAddrV4]) -> BenchResult<TcpStreams> {
        let mut conns = Vec::new();
        for t in targets {
            let s = ns
                .enter(|| TcpStream::connect_timeout(&(*t).into(), Duration::from_secs(3)))
                .ctx(&format!("connect {t}"))?;
            s.set_write_timeout(Some(Duration::from_millis(50)))
                .ctx("timeout")?;
            conns.push(s);
        }
        let mss = {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as u32;
            unsafe {
                libc::getsockopt(
                    conns[0].as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_MAXSEG,
                    &mut v as *mut _ as *mut libc::c_void,
                    &mut len,
                )
            };
            v.max(1) as u32
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handles = conns
            .into_iter()
            .map(|mut s| {
                let st = stop.clone();
                thread::spawn(move || {
                    let buf = vec![0x5au8; 64 << 10];
                    while !st.load(Ordering::Relaxed) {
                        match s.write(&buf) {
                            Ok(_) => {}
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => return,
                        }
                    }
                    let _ = s.shutdown(std::net::Shutdown::Both);
                })
            })
            .collect();
        Ok(TcpStreams { mss, stop, handles })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for TcpStreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// New TCP connections from a namespace, as fast as `threads` threads can open them: connect
/// (blocking), then close with SO_LINGER 0 (an RST: no TIME_WAIT, so the client's ports never
/// run out however many connections a run makes). Targets are taken in turn.
pub struct TcpConnects {
    pub made: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl TcpConnects {
    pub fn start(ns: &Netns, targets: &[SocketAddrV4], threads: usize) -> TcpConnects {
        let made = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|t| {
                let (made, errors, stop) = (made.clone(), errors.clone(), stop.clone());
                let targets = targets.to_vec();
                let ns_file = std::fs::File::open(format!("/run/netns/{}", ns.name));
                thread::spawn(move || {
                    // This thread lives in the namespace: it only connects.
                    let Ok(f) = ns_file else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    {
                        let mut i = t;
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        while !stop.load(Ordering::Relaxed) {
                            let to = targets[i % targets.len()];
                            i += 1;
                            match TcpStream::connect_timeout(&to.into(), Duration::from_secs(1)) {
                                Ok(c) => {
                                    unsafe {
                                        libc::setsockopt(
                                            c.as_raw_fd(),
                                            libc::SOL_SOCKET,
                                            libc::SO_LINGER,
                                            &linger as *const _ as *const libc::c_void,
                                            std::mem::size_of::<libc::linger>() as u32,
                                        )
                                    };
                                    made.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    thread::sleep(POLL);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        TcpConnects {
            made,
            errors,
            stop,
            handles,
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for TcpConnects {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
