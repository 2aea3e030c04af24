//! A scrape target whose only metric counts its scrapes: `test_scrapes_total` is 1 on the
//! first scrape, 2 on the second, and so on. A receiver that holds every value from 1 to its
//! maximum has lost no sample — whatever the timing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The running target; it stops when dropped.
#[derive(Debug)]
pub struct CounterTarget {
    /// Its address.
    pub addr: SocketAddr,
    scrapes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CounterTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CounterTarget {
    /// Starts on 127.0.0.1.
    ///
    /// # Panics
    /// If it cannot bind.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let addr = listener.local_addr().expect("addr");
        let scrapes = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&scrapes);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                let svc = hyper::service::service_fn(move |_req| {
                    let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = format!("# TYPE test_scrapes_total counter\ntest_scrapes_total {n}\n");
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Self { addr, scrapes, task }
    }

    /// Scrapes served so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

/// Checks that `values` (the counter's values at a receiver) are `1..=max`, with at most
/// `failed_scrapes` of them missing: a scrape that Prometheus gave up on (its `up` sample is 0,
/// e.g. past the scrape timeout on a loaded machine) was counted here but yielded no sample, so
/// its value never existed to be lost. Returns `max`.
///
/// # Errors
/// The missing values, when more are missing than scrapes failed.
pub fn contiguous(values: &[f64], failed_scrapes: usize) -> Result<u64, String> {
    let mut v: Vec<u64> = values.iter().filter(|x| x.is_finite()).map(|x| *x as u64).collect();
    v.sort_unstable();
    v.dedup();
    let max = v.last().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=max).filter(|i| v.binary_search(i).is_err()).collect();
    if missing.len() <= failed_scrapes {
        Ok(max)
    } else {
        Err(format!("missing scrapes {missing:?} of 1..={max}, and only {failed_scrapes} scrapes failed"))
    }
}
