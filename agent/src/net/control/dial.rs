//! Opens a control connection: a TCP socket that carries [`SESSION_MARK`] before its first
//! packet, and whose tuples (its own ends, and the translated ones conntrack reports right
//! after the SYN left) are in every program's `fl_session` map before the SYN-ACK can arrive
//! (unless the peer answers faster than a netlink round trip: then a partition drops that
//! SYN-ACK and TCP's retransmission, about a second later, gets through). When conntrack
//! reported no translation right after the SYN, it is asked again once the connection is up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conntrack::{self, ConntrackError};
use super::{Conn, ControlChannel, Registration, SESSION_MARK};

/// A connected control connection; dropping it closes the socket and unregisters its tuples.
#[derive(Debug)]
pub struct ControlStream {
    // Field order = drop order: the socket closes before the exemption goes.
    inner: TcpStream,
    _registration: Registration,
    /// The wire's view when conntrack reported it only once the connection was up.
    _late: Option<Registration>,
    /// The connection as the socket sees it, and on the wire when NAT translates it.
    pub socket: Conn,
    pub on_wire: Option<Conn>,
}

impl ControlStream {
    /// Whether its packets carry the session mark (false without CAP_NET_ADMIN/CAP_NET_RAW).
    pub fn marked(&self) -> bool {
        socket::getsockopt(&self.inner, sockopt::Mark).ok() == Some(SESSION_MARK)
    }
}

/// Resolves `host` and connects to the first address that answers, as a control connection
/// registered with `channel`.
pub async fn dial(host: &str, port: u16, channel: &ControlChannel) -> io::Result<ControlStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last = None;
    for addr in addrs {
        match connect(addr, channel).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// Said once per process: the session is unmarked (the tuple exemption still holds).
static MARK_REFUSED: AtomicBool = AtomicBool::new(false);

/// Connects one address: socket, mark, connect (the SYN leaves), register, wait.
pub async fn connect(addr: SocketAddr, channel: &ControlChannel) -> io::Result<ControlStream> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )?;
    if let Err(e) = socket::setsockopt(&fd, sockopt::Mark, &SESSION_MARK) {
        if !MARK_REFUSED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "cannot set SO_MARK {SESSION_MARK:#x} on the session socket (needs CAP_NET_ADMIN): \
                 this agent's own network faults exempt the session by its addresses and ports only"
            );
        }
    }
    match socket::connect(fd.as_raw_fd(), &socket::SockaddrStorage::from(addr)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let std = std::net::TcpStream::from(fd);
    let conn = Conn {
        local: std.local_addr()?,
        remote: addr,
    };
    let (registration, mut on_wire) = register(channel, conn);
    let stream = TcpStream::from_std(std)?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.peer_addr()?;
    let _ = stream.set_nodelay(true);
    // Asked once more when the first answer had no translation: once the SYN-ACK has come
    // back, a NAT'd connection certainly has its entry (a test once saw none right after
    // the SYN), and without the wire's view a partition of the peer cuts the session. An
    // unreadable conntrack was already reported at the first answer.
    let late = match on_wire {
        Some(_) => None,
        None => translation(&conn).ok().flatten().map(|w| {
            tracing::warn!(
                "control connection {conn}: conntrack reported its translation ({w}) only once it was up; now exempt on the wire too"
            );
            on_wire = Some(w);
            channel.register(&[w])
        }),
    };
    Ok(ControlStream {
        inner: stream,
        _registration: registration,
        _late: late,
        socket: conn,
        on_wire,
    })
}

/// How NAT translates `conn` on the wire (`None`: it does not, or conntrack has no entry).
fn translation(conn: &Conn) -> Result<Option<Conn>, ConntrackError> {
    Ok(conntrack::on_wire(conn)?.filter(|w| w != conn))
}

/// Registers the connection's views: the socket's, and the wire's when conntrack translates it.
fn register(channel: &ControlChannel, conn: Conn) -> (Registration, Option<Conn>) {
    let on_wire = match translation(&conn) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the session's NAT translation; it is exempt by its own addresses only");
            None
        }
    };
    let mut views = vec![conn];
    views.extend(on_wire);
    let registration = channel.register(&views);
    match on_wire {
        Some(w) => tracing::info!(
            "control connection {conn} (on the wire {w}, translated by NAT) is exempt from this agent's network faults"
        ),
        None => tracing::info!(
            "control connection {conn} is exempt from this agent's network faults"
        ),
    }
    (registration, on_wire)
}

impl AsyncRead for ControlStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
