//! A TCP proxy that can be partitioned: while blocked, nothing it carries moves in either
//! direction and new connections hang (as behind a dropped route), until it is unblocked.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to one target. Dropping it stops accepting.
pub struct Proxy {
    addr: SocketAddr,
    blocked: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn wait_open(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|blocked| !*blocked).await;
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_open(&mut rx).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // data read while the route went down is held until it comes back
        wait_open(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Proxies a free loopback port to `target`.
    ///
    /// # Panics
    /// If no port can be bound (test code).
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (blocked, rx) = watch::channel(false);
        let rx = Arc::new(rx);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = (*rx).clone();
                tokio::spawn(async move {
                    wait_open(&mut rx).await;
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, rx.clone()), pipe(sr, cw, rx));
                });
            }
        });
        Self { addr, blocked, accept }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts (true) or restores (false) the route.
    pub fn block(&self, blocked: bool) {
        self.blocked.send_replace(blocked);
    }
}
