//! [`Connection::direct`]: farm's own HTTP/2 client connection, for a
//! one-shot client that reads a coordinator's values in 16 MiB frames.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tonic::body::Body;
use tonic::transport::Uri;
use tower::Service;

use super::{
    BoxError, CONNECT_TIMEOUT, CONNECTION_WINDOW_BYTES, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    MAX_FRAME_BYTES, STREAM_WINDOW_BYTES,
};

/// See [`Connection::direct`](super::Connection::direct): calls to
/// `origin` over one HTTP/2 connection, made on the first call.
#[derive(Clone)]
pub(super) struct Direct {
    origin: Uri,
    sender: Arc<OnceCell<http2::SendRequest<Body>>>,
}

impl Direct {
    pub(super) fn new(origin: Uri) -> Direct {
        Direct {
            origin,
            sender: Arc::new(OnceCell::new()),
        }
    }

    async fn connect(origin: &Uri) -> Result<http2::SendRequest<Body>, BoxError> {
        let host = origin.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = origin.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                )
            })??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(SettingsFirst::new(stream)))
            .await?;
        // A broken connection also fails the calls on it, which report it.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// A stream that fails at once unless the peer's first bytes are an
/// HTTP/2 SETTINGS frame, as every HTTP/2 server's are. Without it, an
/// HTTP/1 server's "HTTP/1.1 400" would read as the header of a 4.7 MB
/// frame (a legal size under [`MAX_FRAME_BYTES`]) and the call would wait
/// for the rest.
struct SettingsFirst {
    inner: TcpStream,
    checked: bool,
}

/// The frame type of SETTINGS, the 4th byte of a frame header.
const SETTINGS_FRAME_TYPE: u8 = 0x4;

impl SettingsFirst {
    fn new(inner: TcpStream) -> SettingsFirst {
        SettingsFirst {
            inner,
            checked: false,
        }
    }
}

impl AsyncRead for SettingsFirst {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !self.checked && matches!(polled, Poll::Ready(Ok(()))) {
            let read = &buf.filled()[before..];
            if let Some(&frame_type) = read.get(3) {
                self.checked = true;
                if frame_type != SETTINGS_FRAME_TYPE {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the peer does not speak HTTP/2: its first bytes are not a SETTINGS frame",
                    )));
                }
            }
        }
        polled
    }
}

impl AsyncWrite for SettingsFirst {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Service<http::Request<Body>> for Direct {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let sender = this
                .sender
                .get_or_try_init(|| Direct::connect(&this.origin))
                .await?;
            let mut sender = sender.clone();
            sender.ready().await?;
            // HTTP/2 needs the scheme and authority as well as the path.
            let (mut parts, body) = request.into_parts();
            let mut uri = this.origin.clone().into_parts();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(uri)?;
            let response = sender
                .send_request(http::Request::from_parts(parts, body))
                .await?;
            Ok(response.map(Body::new))
        })
    }
}
