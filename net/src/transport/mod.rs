//! How peers reach a coordinator: the connection settings every client
//! and worker shares, and [`Connection`], which carries calls over TCP (a
//! tonic [`Channel`], or farm's own client connection in `direct`) or
//! straight to an in-process coordinator (the embedded cluster: no port,
//! no kernel, the same gRPC messages).

mod direct;

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::auth::{self, RoleToken};
use crate::display::shown;
use direct::Direct;

/// HTTP/2 flow-control windows. The 64 KiB default would stall a stream
/// of multi-megabyte result batches on window updates; a stream's window
/// holds two 8 MiB chunks of values, so a chunk rarely waits for one.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The largest HTTP/2 frame the coordinator accepts (the protocol's
/// maximum), so a worker's chunk of values arrives as one frame, which the
/// coordinator keeps as it is instead of joining 16 KiB pieces.
pub const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// How often idle connections are probed, and how long a probe may go
/// unanswered before the connection is dropped (a frozen peer).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an address (as users give it: `host:port`, or a URI) is not one
/// farm can connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAddress {
    #[error(
        "invalid coordinator address '{}': expected HOST:PORT, e.g. 127.0.0.1:50051",
        shown(address)
    )]
    Malformed { address: String },
    #[error(
        "invalid coordinator address '{}': port 0 is not a port anything listens on; give the coordinator's port",
        shown(address)
    )]
    PortZero { address: String },
    /// Refused rather than used in plaintext, which the user did not ask
    /// for.
    #[error(
        "invalid coordinator address '{}': TLS (https://) is not supported yet; give HOST:PORT or http://HOST:PORT",
        shown(address)
    )]
    Tls { address: String },
}

/// The endpoint for a coordinator at `address` (`host:port` or
/// `http://host:port`), with farm's connection settings.
pub fn endpoint(address: &str) -> Result<Endpoint, BadAddress> {
    let address_owned = || address.to_owned();
    let uri: Uri = match address.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(BadAddress::Tls {
                address: address_owned(),
            });
        }
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => address.parse(),
        Some(_) => {
            return Err(BadAddress::Malformed {
                address: address_owned(),
            });
        }
        None => format!("http://{address}").parse(),
    }
    .map_err(|_| BadAddress::Malformed {
        address: address_owned(),
    })?;
    let has_path = !matches!(uri.path(), "" | "/") || uri.query().is_some();
    match (uri.host(), uri.port_u16()) {
        (Some(host), Some(port)) if !host.is_empty() && !has_path => {
            if port == 0 {
                return Err(BadAddress::PortZero {
                    address: address_owned(),
                });
            }
            Ok(configure(Endpoint::from(uri)))
        }
        _ => Err(BadAddress::Malformed {
            address: address_owned(),
        }),
    }
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
}

/// An error of the layer that carries calls.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxedService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// What carries gRPC calls to a coordinator: a [`Channel`] over TCP, or
/// the coordinator's routes in this same process (the embedded cluster),
/// where a call is a function call and a message's buffers are handed
/// over as they are, with no HTTP/2 and no copies in between.
///
/// A connection made [`with_token`](Connection::with_token) presents that
/// token on every call, and its peer presents it on the side connections
/// it opens ([`Connection::token`]).
#[derive(Clone)]
pub struct Connection {
    service: BoxedService,
    token: Option<RoleToken>,
}

impl Connection {
    /// Calls go straight to `service`: the routes of an in-process server.
    pub fn in_process<S>(service: S) -> Connection
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let service = service.map_err(Into::into);
        Connection {
            service: BoxCloneSyncService::new(service),
            token: None,
        }
    }

    /// This connection, presenting `token` (if any) on every call.
    pub fn with_token(self, token: Option<RoleToken>) -> Connection {
        let Some(token) = token else {
            return Connection {
                token: None,
                ..self
            };
        };
        let header = auth::bearer(&token);
        let service = self
            .service
            .map_request(move |mut request: http::Request<Body>| {
                request
                    .headers_mut()
                    .insert(auth::TOKEN_HEADER, header.clone());
                request
            });
        Connection {
            service: BoxCloneSyncService::new(service),
            token: Some(token),
        }
    }

    /// The token this connection presents, for the side connections its
    /// peer opens to the same coordinator.
    pub fn token(&self) -> Option<&RoleToken> {
        self.token.as_ref()
    }

    /// A connection to the coordinator at `address` for a one-shot client
    /// (`farm submit`), made on first use and never remade. Unlike a
    /// [`Channel`] it accepts HTTP/2 frames of up to [`MAX_FRAME_BYTES`]
    /// (tonic's `Endpoint` cannot ask for that), so the coordinator sends
    /// each chunk of values as one frame, which is read as it is instead
    /// of being joined from 16 KiB pieces.
    pub fn direct(address: &str) -> Result<Connection, BadAddress> {
        let origin = endpoint(address)?.uri().clone();
        // `Direct` already fails with a `BoxError`.
        Ok(Connection {
            service: BoxCloneSyncService::new(Direct::new(origin)),
            token: None,
        })
    }
}

impl From<Channel> for Connection {
    fn from(channel: Channel) -> Connection {
        Connection {
            service: BoxCloneSyncService::new(channel.map_err(BoxError::from)),
            token: None,
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Service<http::Request<Body>> for Connection {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = <BoxedService as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.service.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(endpoint("127.0.0.1:50051").is_ok());
        assert!(endpoint("coordinator:50051").is_ok());
        assert!(endpoint("http://[::1]:50051").is_ok());
        assert!(endpoint("HTTP://localhost:1").is_ok());
        let bad = [
            "",
            "127.0.0.1",
            "no spaces:1",
            ":50051",
            "http://",
            "ftp://host:1",
            "host:1/path",
            "host:99999",
        ];
        for bad in bad {
            assert_eq!(
                endpoint(bad).unwrap_err().to_string(),
                format!(
                    "invalid coordinator address '{bad}': expected HOST:PORT, e.g. 127.0.0.1:50051"
                )
            );
        }
        for zero in ["127.0.0.1:0", "http://host:0"] {
            assert_eq!(
                endpoint(zero).unwrap_err().to_string(),
                format!(
                    "invalid coordinator address '{zero}': port 0 is not a port anything listens on; give the coordinator's port"
                )
            );
        }
        for tls in ["https://host:443", "HTTPS://127.0.0.1:50051"] {
            assert_eq!(
                endpoint(tls).unwrap_err().to_string(),
                format!(
                    "invalid coordinator address '{tls}': TLS (https://) is not supported yet; give HOST:PORT or http://HOST:PORT"
                )
            );
        }
        let long = format!("{}:1\n", "h".repeat(100_000));
        let message = endpoint(&long).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
    }
}
