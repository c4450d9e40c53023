//! The byte stream under an NBD or arbiter connection: a plain TCP socket or
//! a TLS session over one (`ftvm-tls`), on either side. Servers start plain
//! and may upgrade in place (NBD's `NBD_OPT_STARTTLS`) or at once (the
//! arbiter); clients likewise. Everything above reads and writes through
//! this one type, with the socket's own timeouts, so the framing code is the
//! same with and without TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use ftvm_tls::{ClientStream, ServerStream};

pub(crate) enum Transport {
    Plain(TcpStream),
    TlsServer(Box<ServerStream>),
    TlsClient(Box<ClientStream>),
    /// Left behind while the socket moves into a TLS session; never read.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection is being upgraded")
}

impl Transport {
    /// The socket, for timeouts and addresses.
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::TlsServer(s) => Some(s.socket()),
            Transport::TlsClient(s) => Some(s.socket()),
            Transport::Gone => None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::TlsServer(_) | Transport::TlsClient(_))
    }

    pub(crate) fn set_timeouts(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        let s = self.socket().ok_or_else(gone)?;
        s.set_read_timeout(t)?;
        s.set_write_timeout(t)
    }

    /// Ends the session (TLS close_notify first) and shuts the socket down.
    pub(crate) fn close(&mut self) {
        match self {
            Transport::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Transport::TlsServer(s) => s.close(),
            Transport::TlsClient(s) => s.close(),
            Transport::Gone => {}
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::TlsServer(s) => s.read(buf),
            Transport::TlsClient(s) => s.read(buf),
            Transport::Gone => Err(gone()),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::TlsServer(s) => s.write(buf),
            Transport::TlsClient(s) => s.write(buf),
            Transport::Gone => Err(gone()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::TlsServer(s) => s.flush(),
            Transport::TlsClient(s) => s.flush(),
            Transport::Gone => Err(gone()),
        }
    }
}
